package examples_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMergingAndMemoryFlags runs the system with the middle layer's merging
// turned off, and with tiny merged calls and a tiny request budget
// everywhere, and checks that every answer is still right; and that bad
// values of those flags are bad usage.
func TestMergingAndMemoryFlags(t *testing.T) {
	skipShort(t)
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"middle", []string{"-batch", "0"}, "-batch must be at least 1, or -1 to turn merging off"},
		{"middle", []string{"-batch", "-2"}, "-batch must be at least 1, or -1 to turn merging off"},
		{"middle", []string{"-batch-calls", "0"}, "-batch-calls must be at least 1"},
		{"middle", []string{"-max-request-mb", "0"}, "-max-request-mb must be at least 1"},
		{"x", []string{"-max-request-mb", "-1"}, "-max-request-mb must be at least 1"},
	} {
		out := runProgram(t, "", tc.name, tc.args...)
		require.Equal(t, 2, out.code, "%s %v: %s", tc.name, tc.args, out.stderr)
		require.Contains(t, out.stderr, tc.name+": "+tc.msg)
	}

	// A job of 200,000 numbers: the client sends it in calls of 65,536
	// numbers (512 KiB), each larger than half the budget of 1 MiB.
	var numbers []int64
	var in strings.Builder
	for i := range 200_000 {
		n := int64(i-100_000) * 30_011
		numbers = append(numbers, n)
		in.WriteString(strconv.FormatInt(n, 10))
		in.WriteByte('\n')
	}
	local := "127.0.0.1:0"
	for _, middleArgs := range [][]string{
		{"-batch", "-1"},
		{"-batch", "7", "-batch-calls", "1", "-max-request-mb", "1"},
	} {
		t.Run(strings.Join(middleArgs, " "), func(t *testing.T) {
			x := startServer(t, "x", "-listen", local, "-max-request-mb", "1")
			y := startServer(t, "y", "-listen", local, "-max-request-mb", "1")
			z := startServer(t, "z", "-listen", local, "-max-request-mb", "1")
			middle := startServer(t, "middle", append([]string{"-listen", local, "-x", x.addr, "-y", y.addr, "-z", z.addr}, middleArgs...)...)

			out := runProgram(t, in.String(), "client", "-addr", middle.addr)
			require.Equal(t, 0, out.code, out.stderr)
			require.Equal(t, textOutput(t, numbers...), out.stdout)

			requireCleanLoad(t, runProgram(t, "", "loadgen", "-addr", middle.addr, "-duration", "1s", "-concurrency", "32", "-json"))
		})
	}
}
