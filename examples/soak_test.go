// The soak test runs the example system as real processes, x, y and z with
// two replicas each behind one middle layer, under load from several
// goroutines while a chaos goroutine kills replicas and restarts them on
// the same ports. It checks every answer, and that the system serves
// normally again once the chaos stops.
package examples_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// soakDuration is how long the soak test runs its load and chaos: 20s, or
// the duration in FANOUT_SOAK (FANOUT_SOAK=2m).
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("FANOUT_SOAK")
	if v == "" {
		return 20 * time.Second
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, "FANOUT_SOAK")
	return d
}

// soakTally counts what the load saw.
type soakTally struct {
	calls   atomic.Int64 // calls made
	failed  atomic.Int64 // calls that failed as a whole or for some numbers
	numbers atomic.Int64 // numbers sent
	lost    atomic.Int64 // numbers answered as failed, or in calls that failed
	ejected atomic.Int64 // numbers of lost that failed as every replica of their route was ejected
	wrong   atomic.Int64 // numbers answered with a wrong value or backend

	mu      sync.Mutex
	unclear []string // failures whose error does not say what failed
}

func (s *soakTally) unclearf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.unclear) < 10 {
		s.unclear = append(s.unclear, fmt.Sprintf(format, args...))
	}
}

// soakNumber returns a random number of a random route whose result fits
// in an int64.
func soakNumber(rng *rand.Rand) int64 {
	switch rng.IntN(3) {
	case 0:
		return -1 - rng.Int64N(3037000499) // x
	case 1:
		return 2 * rng.Int64N(1<<61) // y
	}
	return 2*rng.Int64N(1<<60) + 1 // z
}

// call sends a batch of random numbers and checks every answer: a number
// answered must be answered right, and a failure must say what failed. It
// reports whether every number was answered.
func (s *soakTally) call(c *transport.Client[int64, xyz.Result], rng *rand.Rand) bool {
	batch := make([]int64, 1+rng.IntN(50))
	for i := range batch {
		batch[i] = soakNumber(rng)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := c.Process(ctx, batch)
	s.calls.Add(1)
	s.numbers.Add(int64(len(batch)))
	if err != nil {
		s.failed.Add(1)
		s.lost.Add(int64(len(batch)))
		if msg := err.Error(); !strings.Contains(msg, c.Addr()) ||
			!strings.Contains(msg, "deadline") && !strings.Contains(msg, "unavailable") && !strings.Contains(msg, "interrupted") {
			s.unclearf("call: %v", err)
		}
		return false
	}
	ok := true
	for i, n := range batch {
		want, err := xyz.Expected(n)
		if err != nil {
			panic(err) // soakNumber never overflows
		}
		switch r := out[i]; {
		case r.Failed():
			ok = false
			s.lost.Add(1)
			if strings.Contains(r.Err, "replicas are ejected") {
				s.ejected.Add(1)
			}
			if r.Backend != want.Backend || !strings.HasPrefix(r.Err, want.Backend+" could not process ") {
				s.unclearf("%d failed on backend %q: %s", n, r.Backend, r.Err)
			}
		case r != want:
			s.wrong.Add(1)
			s.unclearf("%d answered %d by backend %q, want %d by %q", n, r.Value, r.Backend, want.Value, want.Backend)
		}
	}
	if !ok {
		s.failed.Add(1)
	}
	return ok
}

// TestSoak runs the soak twice: as it is, and with the middle layer
// hedging every route's calls (its replicas delaying 5% of their calls by
// 20ms, so that hedges are sent and won) and mirroring y's calls to a
// shadow candidate, a y that is never killed: hedges and the shadow must
// leave every answer right, and the candidate must match y on every
// number it answered.
func TestSoak(t *testing.T) {
	skipShort(t)
	t.Run("plain", func(t *testing.T) { soak(t, nil, nil) })
	t.Run("hedged and shadowed", func(t *testing.T) {
		candidate := startServer(t, "y", "-listen", "127.0.0.1:0")
		middle := soak(t, []string{"-delay", "20ms", "-delay-fraction", "0.05"}, []string{"-hedge", "-shadow-y", candidate.addr})
		require.NoError(t, middle.cmd.Process.Signal(syscall.SIGTERM))
		require.Equal(t, 0, middle.wait(t), middle.log())
		log := middle.log()
		t.Logf("soak: %s", regexp.MustCompile(`msg=hedges route=[a-z]+ [^\n]*`).FindAllString(log, -1))
		m := regexp.MustCompile(`msg="shadow summary" route=y mirrored=([0-9]+) dropped=[0-9]+ matches=([0-9]+) mismatches=0 errors=[0-9]+`).FindStringSubmatch(log)
		require.NotNil(t, m, "the shadow found mismatches, or logged no summary: %s", log)
		t.Logf("soak: %s", m[0])
		matches, _ := strconv.Atoi(m[2])
		require.Positive(t, matches)
		won := regexp.MustCompile(`msg=hedges route=[a-z]+ calls=[0-9]+ sent=[0-9]+ won=([1-9][0-9]*) `).FindString(log)
		require.NotEmpty(t, won, "no hedge won: %s", log)
	})
}

// soak runs the soak: replicas started with replicaArgs, the middle layer
// with middleArgs. It returns the middle layer, still running.
func soak(t *testing.T, replicaArgs, middleArgs []string) *server {
	duration := soakDuration(t)

	// replicas[route][i] is the process of a replica; a restarted replica
	// takes the address of the one it replaces.
	var mu sync.Mutex
	replicas := map[string][]*server{}
	for _, route := range xyz.Routes() {
		replicas[route] = startReplicas(t, route, 2, replicaArgs...)
	}
	middle := startMiddle(t, replicas["x"], replicas["y"], replicas["z"], middleArgs...)
	c := transport.NewClient(middle.addr, transport.Int64(), xyz.ResultCodec(), transport.WithLogger(nil))
	defer c.Close()

	var tally soakTally
	end := time.Now().Add(duration)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			for time.Now().Before(end) {
				tally.call(c, rng)
			}
		})
	}

	// Chaos: kill a random replica, let it stay down a little, restart it
	// on its address; sometimes another goes down meanwhile.
	var kills atomic.Int64
	chaosErr := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		defer close(chaosErr)
		for time.Now().Before(end) {
			// Sleeps here only pace the chaos: nothing waits for a state.
			time.Sleep(time.Duration(100+rng.IntN(900)) * time.Millisecond)
			route := xyz.Routes()[rng.IntN(3)]
			i := rng.IntN(2)
			mu.Lock()
			victim := replicas[route][i]
			mu.Unlock()
			victim.cmd.Process.Kill()
			<-victim.exited
			kills.Add(1)
			time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond) // down a while: pacing only
			back, err := launch(t, route, append([]string{"-listen", victim.addr}, replicaArgs...)...)
			if err != nil {
				chaosErr <- fmt.Errorf("restarting %s on %s: %w", route, victim.addr, err)
				return
			}
			mu.Lock()
			replicas[route][i] = back
			mu.Unlock()
		}
	}()
	wg.Wait()
	require.NoError(t, <-chaosErr)

	// Every replica is up again: the system must serve normally once the
	// replicas that were ejected are probed back, within the balancer's
	// longest ejection (30s) and some.
	stopped := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	streak := 0
	for streak < 100 && time.Since(stopped) < time.Minute {
		if tally.call(c, rng) {
			streak++
		} else {
			streak = 0
			time.Sleep(10 * time.Millisecond) // paces the calls while ejected replicas come back; decides nothing
		}
	}
	recovery := time.Since(stopped)

	t.Logf("soak: %v of load from 8 goroutines, %d replicas killed and restarted", duration, kills.Load())
	t.Logf("soak: %d calls (%d numbers), %d failed (%d numbers not answered, %d of them as every replica of their route was ejected), %d wrong answers",
		tally.calls.Load(), tally.numbers.Load(), tally.failed.Load(), tally.lost.Load(), tally.ejected.Load(), tally.wrong.Load())
	t.Logf("soak: serving normally again (100 calls in a row answered in full) %v after the chaos stopped", recovery.Round(time.Millisecond))
	require.Zero(t, tally.wrong.Load(), "wrong answers: %q", tally.unclear)
	require.Empty(t, tally.unclear, "failures that do not say what failed")
	require.Equal(t, 100, streak, "the system did not recover within a minute")
	return middle
}
