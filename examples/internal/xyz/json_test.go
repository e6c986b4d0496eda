package xyz_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

func TestJSONEncoder(t *testing.T) {
	var e xyz.JSONEncoder
	b := e.Append(nil, -3, &xyz.Result{Value: 9, Backend: "x"})
	b = append(b, '\n')
	b = e.Append(b, 7, &xyz.Result{Backend: "z", Err: `"<down>" & out` + "\n"})
	require.Equal(t, `{"input": -3, "output": 9, "backend": "x"}`+"\n"+
		`{"input": 7, "backend": "z", "error": "\"<down>\" & out\n"}`, string(b),
		"the client's and the gateway's form: HTML characters left as they are")
}
