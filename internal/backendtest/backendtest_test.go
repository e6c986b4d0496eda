package backendtest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
)

// nonEmpty builds a wrap from f, which is called with every non-empty batch.
// Empty batches are answered without calling anything.
func nonEmpty(f func(ctx context.Context, leaf fanout.Backend[int64, int64], items []int64) ([]int64, error)) Wrap {
	return func(_ *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
		return fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
			if len(items) == 0 {
				return []int64{}, nil
			}
			return f(ctx, leaf, items)
		})
	}
}

func TestRunDirect(t *testing.T) {
	Run(t, nonEmpty(func(ctx context.Context, leaf fanout.Backend[int64, int64], items []int64) ([]int64, error) {
		return leaf.Process(ctx, items)
	}))
}

// brokenWraps are backends that each break one part of the contract, with
// the subtests of [Run] that must catch them.
var brokenWraps = map[string]struct {
	wrap  Wrap
	fail  []string      // exactly the subtests that must fail
	guard time.Duration // hangGuard for a deliberate hang; 0 keeps the default
}{
	"reversed": {
		wrap: nonEmpty(func(ctx context.Context, leaf fanout.Backend[int64, int64], items []int64) ([]int64, error) {
			out, err := leaf.Process(ctx, items)
			slices.Reverse(out)
			return out, err
		}),
		fail: []string{"Order", "Deadline", "Concurrent"},
	},
	"fails on empty": {
		wrap: func(_ *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
			return fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
				if len(items) == 0 {
					return nil, errors.New("empty batch")
				}
				return leaf.Process(ctx, items)
			})
		},
		fail: []string{"Empty"},
	},
	"rewords errors": {
		wrap: nonEmpty(func(ctx context.Context, leaf fanout.Backend[int64, int64], items []int64) ([]int64, error) {
			out, err := leaf.Process(ctx, items)
			if err != nil && ctx.Err() == nil {
				return nil, errors.New("backend failed")
			}
			return out, err
		}),
		fail: []string{"LeafError"},
	},
	"ignores cancel": {
		wrap: nonEmpty(func(ctx context.Context, leaf fanout.Backend[int64, int64], items []int64) ([]int64, error) {
			detached := context.WithoutCancel(ctx)
			if d, ok := ctx.Deadline(); ok {
				var cancel context.CancelFunc
				detached, cancel = context.WithDeadline(detached, d)
				defer cancel()
			}
			return leaf.Process(detached, items)
		}),
		fail:  []string{"Cancel"},
		guard: time.Second,
	},
	"abandons the leaf on cancel": {
		wrap: nonEmpty(func(ctx context.Context, leaf fanout.Backend[int64, int64], items []int64) ([]int64, error) {
			type result struct {
				out []int64
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := leaf.Process(context.WithoutCancel(ctx), items)
				done <- result{out, err}
			}()
			select {
			case r := <-done:
				return r.out, r.err
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}),
		fail:  []string{"Cancel", "Deadline"},
		guard: time.Second,
	},
	"answers without the leaf": {
		wrap: nonEmpty(func(_ context.Context, _ fanout.Backend[int64, int64], items []int64) ([]int64, error) {
			return want(items), nil
		}),
		fail: []string{"Order", "LeafError", "Cancel", "Deadline"},
	},
	"extends deadline": {
		wrap: nonEmpty(func(ctx context.Context, leaf fanout.Backend[int64, int64], items []int64) ([]int64, error) {
			// Cancellation still passes through; only the deadline is wrong.
			extended, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Hour)
			defer cancel()
			defer context.AfterFunc(ctx, cancel)()
			return leaf.Process(extended, items)
		}),
		fail: []string{"Deadline"},
	},
	"answers from a cache keyed by length": {
		wrap: func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
			var mu sync.Mutex
			cache := make(map[int][]int64)
			return nonEmpty(func(ctx context.Context, leaf fanout.Backend[int64, int64], items []int64) ([]int64, error) {
				mu.Lock()
				out, ok := cache[len(items)]
				mu.Unlock()
				if ok {
					return out, nil
				}
				out, err := leaf.Process(ctx, items)
				if err == nil {
					mu.Lock()
					cache[len(items)] = out
					mu.Unlock()
				}
				return out, err
			})(t, leaf)
		},
		fail: []string{"Concurrent"},
	},
}

const brokenEnv = "BACKENDTEST_BROKEN"

// TestBrokenChild runs the suite over one broken wrap. It runs only in the
// child process started by TestRunCatchesBrokenBackends.
func TestBrokenChild(t *testing.T) {
	name := os.Getenv(brokenEnv)
	if name == "" {
		t.Skip("runs only as a child of TestRunCatchesBrokenBackends")
	}
	broken, ok := brokenWraps[name]
	require.True(t, ok, "unknown broken wrap %q", name)
	if broken.guard > 0 {
		hangGuard = broken.guard
	}
	Run(t, broken.wrap)
}

// TestRunCatchesBrokenBackends shows that each subtest of Run can fail: every
// broken wrap must fail exactly its subtests and pass all the others. The
// suite runs in a child process because a failing subtest fails its parent.
func TestRunCatchesBrokenBackends(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process per broken wrap")
	}
	if os.Getenv(brokenEnv) != "" {
		t.Skip("already in a child")
	}
	failLine := regexp.MustCompile(`(?m)^\s*--- FAIL: TestBrokenChild/(\w+)`)
	passLine := regexp.MustCompile(`(?m)^\s*--- PASS: TestBrokenChild/(\w+)`)
	for name, broken := range brokenWraps {
		t.Run(name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBrokenChild$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+name)
			output, err := cmd.CombinedOutput()
			var exitErr *exec.ExitError
			require.ErrorAs(t, err, &exitErr, "the suite passed a broken backend:\n%s", output)

			var failed, passed []string
			for _, m := range failLine.FindAllStringSubmatch(string(output), -1) {
				failed = append(failed, m[1])
			}
			for _, m := range passLine.FindAllStringSubmatch(string(output), -1) {
				passed = append(passed, m[1])
			}
			require.ElementsMatch(t, broken.fail, failed, "failing subtests; output:\n%s", output)
			require.Len(t, passed, 6-len(broken.fail), "passing subtests; output:\n%s", output)
		})
	}
}
