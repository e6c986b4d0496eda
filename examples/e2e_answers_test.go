package examples_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOneBadNumberFailsOnlyItself sends, as a user would, a stream in which
// one number overflows among others of the same backend: only that number
// fails, its neighbours are answered, and the error names it alone.
func TestOneBadNumberFailsOnlyItself(t *testing.T) {
	skipShort(t)
	local := "127.0.0.1:0"
	x := startServer(t, "x", "-listen", local)
	y := startServer(t, "y", "-listen", local)
	z := startServer(t, "z", "-listen", local)
	middle := startServer(t, "middle", "-listen", local, "-x", x.addr, "-y", y.addr, "-z", z.addr)
	in := "1\n2\n3\n9223372036854775807\n1\n2\n3\n"

	out := runProgram(t, in, "client", "-addr", middle.addr)
	require.Equal(t, 1, out.code)
	require.Equal(t, "client: 9223372036854775807 failed on backend z: z: 3*9223372036854775807+1 overflows int64\n", out.stderr,
		"the one number that failed, and nothing about its neighbours")

	out = runProgram(t, in, "client", "-addr", middle.addr, "-partial", "-json")
	require.Equal(t, 1, out.code)
	var got []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out.stdout), &got), out.stdout)
	require.Equal(t, []map[string]any{
		{"input": 1.0, "output": 4.0, "backend": "z"},
		{"input": 2.0, "output": 1.0, "backend": "y"},
		{"input": 3.0, "output": 10.0, "backend": "z"},
		{"input": 9223372036854775807.0, "backend": "z", "error": "z: 3*9223372036854775807+1 overflows int64"},
		{"input": 1.0, "output": 4.0, "backend": "z"},
		{"input": 2.0, "output": 1.0, "backend": "y"},
		{"input": 3.0, "output": 10.0, "backend": "z"},
	}, got)
	require.Equal(t, "client: 1 of 7 numbers failed\n", out.stderr)
}

// TestWrongAddressIsRefusedNotAnswered gives the middle layer x's address
// for y: y's numbers must fail, naming both services, and never be answered
// by x; loadgen counts errors, not right answers.
func TestWrongAddressIsRefusedNotAnswered(t *testing.T) {
	skipShort(t)
	local := "127.0.0.1:0"
	x := startServer(t, "x", "-listen", local)
	z := startServer(t, "z", "-listen", local)
	middle := startServer(t, "middle", "-listen", local, "-x", x.addr, "-y", x.addr, "-z", z.addr)

	out := runProgram(t, "", "client", "-addr", middle.addr, "-partial", "4", "-3")
	require.Equal(t, 1, out.code)
	lines := strings.Split(strings.TrimSuffix(out.stdout, "\n"), "\n")
	require.Len(t, lines, 2, out.stdout)
	require.True(t, strings.HasPrefix(lines[0], "4 -> failed (backend y): "), lines[0])
	require.Contains(t, lines[0], `client expects service "y", server serves "x"`)
	require.Equal(t, "-3 -> 9 (backend x)", lines[1])

	// x logs the refusal too.
	x.waitLog(t, `client expects service \"y\", server serves \"x\"`, 1)

	out = runProgram(t, "", "client", "-addr", middle.addr, "4")
	require.Equal(t, 1, out.code)
	require.Contains(t, out.stderr, "client: 4 failed on backend y: ")
	require.Contains(t, out.stderr, `client expects service "y", server serves "x"`)
	require.Empty(t, out.stdout)

	// A client pointed at a backend rather than the middle layer is refused.
	out = runProgram(t, "", "client", "-addr", x.addr, "4")
	require.Equal(t, 1, out.code)
	require.Contains(t, out.stderr, `client expects service "middle", server serves "x"`)

	out = runProgram(t, "", "loadgen", "-addr", middle.addr, "-duration", "1s", "-concurrency", "2", "-batch", "10", "-json")
	var s struct{ Requests, Errors, Wrong int64 }
	require.NoError(t, json.Unmarshal([]byte(out.stdout), &s), out.stdout+out.stderr)
	require.Zero(t, s.Wrong)
	require.NotZero(t, s.Errors, "y's numbers fail")
}
