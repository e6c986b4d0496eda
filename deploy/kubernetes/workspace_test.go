package kubernetes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// repoRoot is the repository's root, where go.work is, from this folder.
var repoRoot = filepath.Join("..", "..")

// goCommand returns the go command with args, run in the repository's root
// in its workspace, even when the test itself runs outside it (GOWORK=off).
func goCommand(args ...string) (*exec.Cmd, error) {
	work, err := filepath.Abs(filepath.Join(repoRoot, "go.work"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "GOWORK="+work)
	return cmd, nil
}

// goOutput runs the go command with args and env (KEY=value) added, and
// returns its standard output.
func goOutput(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd, err := goCommand(args...)
	require.NoError(t, err)
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go %s: %s", strings.Join(args, " "), stderr.String())
	return string(out)
}

// workspace is what `go work edit -json` says of go.work.
type workspace struct {
	Go  string
	Use []struct{ DiskPath string }
}

func readWorkspace(t *testing.T) workspace {
	t.Helper()
	var w workspace
	require.NoError(t, json.Unmarshal([]byte(goOutput(t, nil, "work", "edit", "-json")), &w))
	require.NotEmpty(t, w.Go, "go.work has a go line")
	return w
}

// mainPackages returns the programs of examples/, by name (the folder's):
// every package there named main.
func mainPackages(t *testing.T) map[string]string {
	t.Helper()
	out := goOutput(t, nil, "list", "-f", `{{if eq .Name "main"}}{{.Dir}}{{end}}`, "./examples/...")
	mains := map[string]string{}
	for _, dir := range strings.Fields(out) {
		mains[filepath.Base(dir)] = "./examples/" + filepath.Base(dir)
	}
	require.NotEmpty(t, mains, "no programs in examples/")
	return mains
}

// The programs of examples/, built once, with the Dockerfile's flags, into
// a folder that TestMain removes.
var (
	builtOnce sync.Once
	builtDir  string
	builtErr  error
)

// programs returns the folder of the built programs, built with the
// Dockerfile's settings (CGO_ENABLED=0, -trimpath, -ldflags "-s -w"), so
// that a program that would not build so fails here too.
func programs(t *testing.T) string {
	t.Helper()
	mains := mainPackages(t)
	builtOnce.Do(func() {
		builtDir, builtErr = os.MkdirTemp("", "fanout-programs-")
		if builtErr != nil {
			return
		}
		args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", builtDir + string(filepath.Separator)}
		var pkgs []string
		for _, pkg := range mains {
			pkgs = append(pkgs, pkg)
		}
		sort.Strings(pkgs)
		var cmd *exec.Cmd
		if cmd, builtErr = goCommand(append(args, pkgs...)...); builtErr != nil {
			return
		}
		cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			builtErr = fmt.Errorf("%v: %v\n%s", cmd.Args, err, out)
		}
	})
	require.NoError(t, builtErr)
	return builtDir
}

// programPath returns the path of the built program name.
func programPath(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(programs(t), name)
	if runtime.GOOS == "windows" {
		p += ".exe"
	}
	_, err := os.Stat(p)
	require.NoError(t, err, "program %s, which is not a program of examples/", name)
	return p
}

func TestMain(m *testing.M) {
	m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
}
