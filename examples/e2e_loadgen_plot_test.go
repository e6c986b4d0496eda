// End-to-end tests of loadgen's progress and its -plot chart, against a
// real middle layer, as in e2e_test.go: the progress line on a terminal
// (a pseudo-terminal), none with -json, and the PNG it writes at the end,
// or the errors when it cannot.
package examples_test

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLoadgenPlot runs loadgen -json -plot against a real system: the run
// is clean, standard error is empty (no progress with -json), and the
// file is a PNG of the chart's size.
func TestLoadgenPlot(t *testing.T) {
	skipShort(t)
	addr := startSystem(t)
	path := filepath.Join(t.TempDir(), "latency.png")
	out := runProgram(t, "", "loadgen", "-addr", addr, "-duration", "2s", "-concurrency", "4", "-json", "-plot", path)
	requireCleanLoad(t, out)
	require.Empty(t, out.stderr, "no progress with -json")

	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err, "loadgen -plot writes a PNG")
	require.Equal(t, image.Rect(0, 0, 1000, 500), img.Bounds())
}

// TestLoadgenPlotFlag checks that a -plot file that cannot be written is
// bad usage, found before loadgen dials (nothing listens at the address:
// dialing would exit with status 1).
func TestLoadgenPlotFlag(t *testing.T) {
	skipShort(t)
	addr := closedAddr(t)
	dir := t.TempDir()
	for _, tc := range []struct{ path, why string }{
		{filepath.Join(dir, "none", "latency.png"), "directory " + filepath.Join(dir, "none") + " does not exist"},
		{filepath.Join(dir, "latency.jpg"), "the file name must end in .png"},
	} {
		out := runProgram(t, "", "loadgen", "-addr", addr, "-duration", "1s", "-plot", tc.path)
		require.Equal(t, 2, out.code, out.stderr)
		require.Contains(t, out.stderr, `invalid value "`+tc.path+`" for flag -plot: `+tc.why+"\n")
		require.Empty(t, out.stdout)
	}
}

// TestLoadgenPlotWriteFails removes the -plot file's directory during a
// run: at the end loadgen prints its summary, then says it could not
// write the file, naming it, and exits with status 1. The run is ended
// with Ctrl-C once a progress line (one a second, standard error not
// being a terminal) shows that it is under way.
func TestLoadgenPlotWriteFails(t *testing.T) {
	skipShort(t)
	addr := startSystem(t)
	dir := filepath.Join(t.TempDir(), "plots")
	require.NoError(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "latency.png")
	load := startProgram(t, "", "loadgen", "-addr", addr, "-duration", "45s", "-concurrency", "2", "-plot", path)
	load.waitLog(t, " requests answered (", 1)
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, load.cmd.Process.Signal(syscall.SIGINT))
	out := load.wait(t)
	require.Equal(t, 1, out.code, out.stderr)
	require.Regexp(t, `(?m)^errors +0 calls failed`, out.stdout, "the summary is printed")
	require.Contains(t, out.stderr, "loadgen: -plot "+path+": ")
	require.NoFileExists(t, path)
}

// TestLoadgenProgressOnTerminal runs loadgen with standard error on a
// pseudo-terminal: the progress is one line rewritten in place (carriage
// returns, no line a second), ended before the summary; with -json there
// is no progress at all.
func TestLoadgenProgressOnTerminal(t *testing.T) {
	skipShort(t)
	addr := startSystem(t)
	final := regexp.MustCompile(`\r\[#{20}\] \d+\.\ds/1s  \d+ answered  \d+ req/s  0 errors  0 wrong\r?\n$`)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"text", nil},
		{"json", []string{"-json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr := loadgenOnTerminal(t, append([]string{"-addr", addr, "-duration", "1s", "-concurrency", "2"}, tc.args...)...)
			if tc.name == "json" {
				require.Empty(t, stderr, "no progress with -json")
				require.Contains(t, stdout, `"wrong":0`)
				return
			}
			require.Regexp(t, final, stderr, "the last progress line, ended")
			require.NotContains(t, stderr, "requests answered", "no line a second on a terminal")
			require.Regexp(t, `^batch 10, concurrency 2, `, stdout)
		})
	}
}

// loadgenOnTerminal runs loadgen with args, its standard error on a new
// pseudo-terminal, and returns what it wrote to standard output and to
// the terminal. It skips the test where there is no pseudo-terminal.
func loadgenOnTerminal(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	ctl, tty, err := openTerminal()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ctl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*hangGuard)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "loadgen"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, tty
	require.NoError(t, cmd.Start())
	tty.Close() // loadgen has it

	// The terminal's output until loadgen has closed it: then a read of
	// ctl fails (EIO on Linux).
	var written bytes.Buffer
	read := make(chan struct{})
	go func() {
		written.ReadFrom(ctl)
		close(read)
	}()
	require.NoError(t, cmd.Wait(), "loadgen %q: %s", args, out.String())
	select {
	case <-read:
	case <-time.After(hangGuard):
		t.Fatalf("the terminal not closed %v after loadgen exited", hangGuard)
	}
	return out.String(), written.String()
}
