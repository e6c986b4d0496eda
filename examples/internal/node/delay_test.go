package node

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

// TestDelayFraction checks the share of calls delay delays, counting the
// Debug line each delayed call logs: none at 0, every one at 1, and about
// half at 0.5. Over 400 calls, a fair coin delays 200 give or take 10 (one
// standard deviation): a count outside 120..280 has a probability below
// 1e-15. Every call is answered, delayed or not.
func TestDelayFraction(t *testing.T) {
	z, err := xyz.Backend("z")
	require.NoError(t, err)
	for _, tc := range []struct {
		fraction float64
		calls    int
		min, max int // delayed calls
	}{
		{0, 400, 0, 0},
		{1, 400, 400, 400},
		{0.5, 400, 120, 280},
	} {
		var logs bytes.Buffer
		b := delay(z, time.Nanosecond, tc.fraction, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		for range tc.calls {
			got, err := b.Process(context.Background(), []int64{1, 3})
			require.NoError(t, err)
			require.Equal(t, []int64{4, 10}, got)
		}
		delayed := strings.Count(logs.String(), `level=DEBUG msg="call delayed" numbers=2 delay=1ns`)
		require.Equal(t, delayed, strings.Count(logs.String(), "\n"), "fraction %v: no other lines: %s", tc.fraction, logs.String())
		require.GreaterOrEqual(t, delayed, tc.min, "fraction %v", tc.fraction)
		require.LessOrEqual(t, delayed, tc.max, "fraction %v", tc.fraction)
		t.Logf("fraction %v: %d of %d calls delayed", tc.fraction, delayed, tc.calls)
	}
}
