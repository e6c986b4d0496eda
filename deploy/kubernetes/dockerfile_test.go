package kubernetes

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// No Docker engine runs where the tests do, so these tests read the
// Dockerfile and .dockerignore instead of building the image: what the
// build stage builds and how, what the final stage holds and who it runs
// as, and whether the build context holds every file the programs are
// built from.

// instruction is one instruction of a Dockerfile, its continuation lines
// joined.
type instruction struct {
	line int    // where it starts
	cmd  string // FROM, RUN, ..., upper case
	args string
}

// stage is one stage of a Dockerfile: its FROM and what follows.
type stage struct {
	image, name string // FROM image AS name
	body        []instruction
}

// readDockerfile reads the repository's Dockerfile into its stages.
func readDockerfile(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	require.NoError(t, err)
	defer f.Close()
	var (
		stages []stage
		cur    *instruction
	)
	add := func(in instruction) {
		if in.cmd == "FROM" {
			words := shellWords(in.args)
			words = slices.DeleteFunc(words, func(w string) bool { return strings.HasPrefix(w, "--") })
			require.True(t, len(words) == 1 || len(words) == 3 && strings.EqualFold(words[1], "AS"), "Dockerfile:%d: FROM %s", in.line, in.args)
			s := stage{image: words[0]}
			if len(words) == 3 {
				s.name = words[2]
			}
			stages = append(stages, s)
			return
		}
		require.NotEmpty(t, stages, "Dockerfile:%d: %s before FROM", in.line, in.cmd)
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
	}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue // comment lines end no instruction: Docker drops them
		}
		text, continued := strings.CutSuffix(line, `\`)
		if cur == nil {
			cmd, args, _ := strings.Cut(text, " ")
			cur = &instruction{line: n, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		} else {
			cur.args += " " + strings.TrimSpace(text)
		}
		if !continued {
			add(*cur)
			cur = nil
		}
	}
	require.NoError(t, sc.Err())
	require.Nil(t, cur, "the Dockerfile ends in a continued line")
	require.GreaterOrEqual(t, len(stages), 2, "a build stage and a final stage")
	return stages
}

// shellWords splits s into words as a shell would: at blanks, except within
// quotes, with a backslash escaping the next character outside single
// quotes.
func shellWords(s string) []string {
	var (
		words []string
		word  strings.Builder
		in    bool // in a word
		quote rune // the quote we are in, or 0
		esc   bool
	)
	for _, r := range s {
		switch {
		case esc:
			word.WriteRune(r)
			esc = false
		case r == '\\' && quote != '\'':
			esc, in = true, true
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			word.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				words = append(words, word.String())
				word.Reset()
				in = false
			}
		default:
			word.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, word.String())
	}
	return words
}

// goBuild is the go build command of a Dockerfile's build stage.
type goBuild struct {
	stage    int    // the stage it runs in
	at       string // "Dockerfile:N", for messages
	words    []string
	env      map[string]string // the stage's ENV up to the RUN, then the RUN's own assignments
	out      string            // -o
	packages []string
}

// findGoBuild returns the one go build command of the Dockerfile, which is
// in a stage before the final one.
func findGoBuild(t *testing.T, stages []stage) goBuild {
	t.Helper()
	var builds []goBuild
	for i, s := range stages {
		env := map[string]string{}
		for _, in := range s.body {
			switch in.cmd {
			case "ENV":
				for _, w := range shellWords(in.args) {
					k, v, ok := strings.Cut(w, "=")
					require.True(t, ok, "Dockerfile:%d: ENV KEY=value", in.line)
					env[k] = v
				}
			case "RUN":
				words := shellWords(in.args)
				for len(words) > 0 && strings.HasPrefix(words[0], "--") { // RUN --mount=...
					words = words[1:]
				}
				// Assignments before the command, as in CGO_ENABLED=0 go build.
				runEnv := maps.Clone(env)
				for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
					k, v, _ := strings.Cut(words[0], "=")
					runEnv[k] = v
					words = words[1:]
				}
				if len(words) >= 2 && words[0] == "go" && words[1] == "build" {
					builds = append(builds, goBuild{stage: i, at: fmt.Sprintf("Dockerfile:%d", in.line), words: words[2:], env: runEnv})
				}
			}
		}
	}
	require.Len(t, builds, 1, "the Dockerfile runs go build once, for every program (a RUN of go build alone, no && or ;)")
	b := builds[0]
	require.Less(t, b.stage, len(stages)-1, "%s: go build runs in a build stage, not the final one", b.at)
	for i := 0; i < len(b.words); i++ {
		w := b.words[i]
		switch {
		case w == "-o" && i+1 < len(b.words):
			b.out = b.words[i+1]
			i++
		case strings.HasPrefix(w, "-o="):
			b.out = strings.TrimPrefix(w, "-o=")
		case strings.HasPrefix(w, "./"):
			b.packages = append(b.packages, w)
		}
	}
	return b
}

// dockerfilePrograms returns the names of the programs the Dockerfile
// builds.
func dockerfilePrograms(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, p := range findGoBuild(t, readDockerfile(t)).packages {
		names = append(names, path.Base(p))
	}
	return names
}

func TestDockerfileBuildsEveryProgram(t *testing.T) {
	stages := readDockerfile(t)
	b := findGoBuild(t, stages)
	var want []string
	for _, pkg := range mainPackages(t) {
		want = append(want, path.Clean(pkg))
	}
	slices.Sort(want)
	var got []string
	for _, pkg := range b.packages {
		got = append(got, path.Clean(pkg))
	}
	slices.Sort(got)
	require.Equal(t, want, got, "%s: go build builds every program of examples/ (each folder of a main package), and only those", b.at)

	require.Contains(t, b.words, "-trimpath", b.at)
	var ldflags []string
	for i, w := range b.words {
		if v, ok := strings.CutPrefix(w, "-ldflags="); ok {
			ldflags = strings.Fields(v)
		} else if w == "-ldflags" && i+1 < len(b.words) {
			ldflags = strings.Fields(b.words[i+1])
		}
	}
	require.Subset(t, ldflags, []string{"-s", "-w"}, "%s: -ldflags \"-s -w\"", b.at)
	require.True(t, strings.HasSuffix(b.out, "/"), "%s: -o names a folder (ends in /), for every program at once", b.at)

	// The final stage copies that folder to binDir.
	build := stages[b.stage].name
	if build == "" {
		build = strconv.Itoa(b.stage)
	}
	final := stages[len(stages)-1]
	var copied bool
	for _, in := range final.body {
		words := shellWords(in.args)
		if in.cmd == "COPY" && slices.Contains(words, "--from="+build) && len(words) >= 3 &&
			path.Clean(words[len(words)-2]) == path.Clean(b.out) && words[len(words)-1] == binDir {
			copied = true
		}
	}
	require.True(t, copied, "the final stage has COPY --from=%s %s %s", build, b.out, binDir)
}

func TestDockerfileBuildsStatically(t *testing.T) {
	b := findGoBuild(t, readDockerfile(t))
	require.Equal(t, "0", b.env["CGO_ENABLED"], "%s: CGO_ENABLED=0 (ENV before it, or before go build in the RUN)", b.at)
}

func TestDockerfileGoMatchesWorkspace(t *testing.T) {
	w := readWorkspace(t)
	parts := strings.SplitN(w.Go, ".", 3)
	require.GreaterOrEqual(t, len(parts), 2, "go.work: go %s", w.Go)
	release := parts[0] + "." + parts[1]
	stages := readDockerfile(t)
	b := findGoBuild(t, stages)
	img := stages[b.stage].image
	tag, ok := strings.CutPrefix(img, "golang:")
	require.True(t, ok, "the build stage is FROM golang:TAG, not %s", img)
	ok = tag == release || strings.HasPrefix(tag, release+".") || strings.HasPrefix(tag, release+"-")
	require.True(t, ok, "the build stage's golang:%s is Go %s, the release of go.work's go %s", tag, release, w.Go)
}

func TestDockerfileFinalStage(t *testing.T) {
	stages := readDockerfile(t)
	final := stages[len(stages)-1]
	var user, pathEnv string
	for _, in := range final.body {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENV":
			for _, w := range shellWords(in.args) {
				if v, ok := strings.CutPrefix(w, "PATH="); ok {
					pathEnv = v
				}
			}
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	n, err := strconv.ParseUint(uid, 10, 32)
	require.NoError(t, err, "the final stage's USER %q is a number, so that the kubelet can tell it is not root (runAsNonRoot)", user)
	require.NotZero(t, n, "the final stage's USER is not root")
	require.Contains(t, strings.Split(pathEnv, ":"), strings.TrimSuffix(binDir, "/"),
		"the final stage's PATH holds %s, for docker run fanout x", binDir)
	for _, s := range stages {
		for _, in := range s.body {
			require.NotEqual(t, "EXPOSE", in.cmd, "Dockerfile:%d: the image exposes nothing: each program's ports are its flags'", in.line)
		}
	}
}

func TestDockerfileNamesNoRegistry(t *testing.T) {
	for _, s := range readDockerfile(t) {
		first, _, hasPath := strings.Cut(s.image, "/")
		require.False(t, hasPath && (strings.ContainsAny(first, ".:") || first == "localhost"),
			"FROM %s names a registry host: use the default registry's name", s.image)
	}
}

// ignorePattern is one line of .dockerignore.
type ignorePattern struct {
	segments []string // the pattern split at /; ** is a segment of its own
	include  bool     // a !pattern: it puts back what an earlier one left out
}

// readDockerignore reads the repository's .dockerignore as Docker does:
// blank lines and # comments skipped, each pattern cleaned, relative to the
// context's root.
func readDockerignore(t *testing.T) []ignorePattern {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var patterns []ignorePattern
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var p ignorePattern
		line, p.include = strings.CutPrefix(line, "!")
		line = strings.TrimPrefix(path.Clean(strings.TrimSpace(line)), "/")
		p.segments = strings.Split(line, "/")
		for _, seg := range p.segments {
			require.True(t, seg == "**" || !strings.Contains(seg, "**"), ".dockerignore %q: this test reads ** only as a whole segment", line)
			_, err := path.Match(seg, "")
			require.NoError(t, err, ".dockerignore %q", line)
		}
		patterns = append(patterns, p)
	}
	return patterns
}

// matchSegments reports whether the path segments name match the pattern's,
// where ** matches any number of segments.
func matchSegments(pattern, name []string) bool {
	if len(pattern) == 0 {
		return len(name) == 0
	}
	if pattern[0] == "**" {
		for i := 0; i <= len(name); i++ {
			if matchSegments(pattern[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	if len(name) == 0 {
		return false
	}
	ok, _ := path.Match(pattern[0], name[0])
	return ok && matchSegments(pattern[1:], name[1:])
}

// inContext reports whether the file at name (slash-separated, from the
// context's root) is sent to the build: the last pattern that matches it or
// a folder it is in decides.
func inContext(patterns []ignorePattern, name string) bool {
	in := true
	segs := strings.Split(name, "/")
	for _, p := range patterns {
		for n := len(segs); n > 0; n-- {
			if matchSegments(p.segments, segs[:n]) {
				in = p.include
				break
			}
		}
	}
	return in
}

func TestDockerignoreReading(t *testing.T) {
	patterns := []ignorePattern{
		{segments: []string{"bench", "*"}},
		{segments: []string{"bench", "go.mod"}, include: true},
		{segments: []string{"**", "*_test.go"}},
		{segments: []string{".git"}},
	}
	for name, want := range map[string]bool{
		"bench/go.mod":            true,
		"bench/go.sum":            false,
		"bench/grpc/server.go":    false,
		"router.go":               true,
		"router_test.go":          false,
		"transport/frame_test.go": false,
		"transport/frame.go":      true,
		".git/HEAD":               false,
		"examples/.gitkeep":       true,
	} {
		require.Equal(t, want, inContext(patterns, name), name)
	}
}

func TestDockerContextHoldsTheBuild(t *testing.T) {
	patterns := readDockerignore(t)
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	need := []string{"go.work"}
	if _, err := os.Stat(filepath.Join(repoRoot, "go.work.sum")); err == nil {
		need = append(need, "go.work.sum")
	}
	// go.work names every module: each one's go.mod and go.sum.
	for _, u := range readWorkspace(t).Use {
		dir := path.Clean(filepath.ToSlash(u.DiskPath))
		for _, f := range []string{"go.mod", "go.sum"} {
			if _, err := os.Stat(filepath.Join(repoRoot, dir, f)); err == nil || f == "go.mod" {
				need = append(need, path.Join(dir, f))
			}
		}
	}
	// Every file of the repository's packages that the programs are built
	// from, for each system the image may be built for.
	pkgs := findGoBuild(t, readDockerfile(t)).packages
	const format = `{{if not .Standard}}{{.Dir}}{{range .GoFiles}}{{"\t"}}{{.}}{{end}}{{range .SFiles}}{{"\t"}}{{.}}{{end}}{{range .EmbedFiles}}{{"\t"}}{{.}}{{end}}{{end}}`
	for _, arch := range []string{"amd64", "arm64"} {
		out := goOutput(t, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + arch},
			append([]string{"list", "-deps", "-f", format}, pkgs...)...)
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			fields := strings.Split(line, "\t")
			if fields[0] == "" {
				continue
			}
			rel, err := filepath.Rel(root, fields[0])
			require.NoError(t, err)
			if strings.HasPrefix(rel, "..") {
				continue // a module from outside: the build downloads it
			}
			for _, f := range fields[1:] {
				need = append(need, path.Join(filepath.ToSlash(rel), f))
			}
		}
	}
	for _, f := range need {
		require.True(t, inContext(patterns, f), ".dockerignore leaves out %s, which the Dockerfile's build needs", f)
	}
}
