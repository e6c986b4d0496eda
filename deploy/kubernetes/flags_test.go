package kubernetes

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// help runs program with args and -h, and returns what it printed, to
// standard error, as its flag set does for -h or a bad flag.
func help(t *testing.T, program string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // -h exits at once; a program that serves instead is killed
	defer cancel()
	cmd := exec.CommandContext(ctx, programPath(t, program), append(args, "-h")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	require.True(t, err == nil || errors.As(err, &exit) && exit.ExitCode() == 2,
		"%s %s -h: %v (-h exits with status 0, a bad flag with 2)\n%s", program, strings.Join(args, " "), err, stderr.String())
	require.Empty(t, stdout.String(), "%s -h: the flags go to standard error", program)
	return stderr.String()
}

// flagLine is a flag's line in the flag package's usage message: two
// spaces, the flag, then the name of its value unless it is a bool flag.
var flagLine = regexp.MustCompile(`^  -([^\s=]+)(?: (\S+))?(?:\t|$)`)

// acceptedFlags returns the flags program accepts, as its -h lists them.
func acceptedFlags(t *testing.T, program string) map[string]bool {
	t.Helper()
	flags := flagList(help(t, program))
	require.NotEmpty(t, flags, "%s -h lists no flags", program)
	return flags
}

// flagList reads the flags of a usage message that the flag package
// printed: each flag's name, and whether it is a bool flag (one that takes
// no value of its own).
func flagList(usage string) map[string]bool {
	flags := map[string]bool{}
	for _, line := range strings.Split(usage, "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flags[m[1]] = m[2] == ""
		}
	}
	return flags
}

func TestFlagListParsing(t *testing.T) {
	fs := flag.NewFlagSet("p", flag.ContinueOnError)
	fs.Bool("v", false, "one letter, usage on the same line")
	fs.Bool("hedge", false, "a bool")
	fs.String("listen", ":0", "an `address`, with a default")
	fs.Duration("grace", time.Second, "a duration")
	fs.Func("x", "a Func flag, `addresses`,\nits usage on two lines -like this", func(string) error { return nil })
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	want := map[string]bool{"v": true, "hedge": true, "listen": false, "grace": false, "x": false}
	require.Equal(t, want, flagList(b.String()), b.String())
}

func TestProgramsAcceptTheirFlags(t *testing.T) {
	m := load(t)
	for _, c := range m.containers(t) {
		accepted := acceptedFlags(t, c.program)
		var args []string
		for _, f := range c.flags {
			isBool, ok := accepted[f.name]
			require.True(t, ok, "%s: %s has no flag -%s", c.at, c.program, f.name)
			require.True(t, f.hasValue || isBool, "%s: -%s takes a value: -%s=VALUE", c.at, f.name, f.name)
			args = append(args, "-"+f.name+"="+f.value)
			if !f.hasValue {
				args[len(args)-1] = "-" + f.name
			}
		}
		// Every value is one the program's flags take if its usage message
		// comes out alone: a bad value is reported before it. What a
		// program checks only after parsing (-log-format text or json, for
		// one) is not seen here: -h exits first.
		usage := help(t, c.program)
		got := help(t, c.program, args...)
		require.True(t, got == usage, "%s: %s refuses its args: %s", c.at, c.program, firstLine(got))
	}
}

// firstLine is the first line of s: where a flag set reports a bad flag.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
