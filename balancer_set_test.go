package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
)

// setReplica is a replica that says who answered, counts its calls, and
// fails the test if it is called after it was retired.
type setReplica struct {
	t       *testing.T
	name    string
	calls   atomic.Int64
	retired atomic.Bool
	gate    chan struct{} // if not nil, a call waits for it
	entered chan struct{} // if not nil, told as a call starts
}

func (r *setReplica) Process(ctx context.Context, in []int64) ([]int64, error) {
	if r.retired.Load() {
		r.t.Errorf("replica %s called after it was retired", r.name)
	}
	r.calls.Add(1)
	if r.entered != nil {
		r.entered <- struct{}{}
	}
	if r.gate != nil && len(in) > 0 {
		<-r.gate
	}
	return in, nil
}

func setOf(rs ...*setReplica) ([]fanout.Backend[int64, int64], []string) {
	var bs []fanout.Backend[int64, int64]
	var names []string
	for _, r := range rs {
		bs = append(bs, r)
		names = append(names, r.name)
	}
	return bs, names
}

func stateOf(b *fanout.Balancer[int64, int64]) map[string]string {
	m := map[string]string{}
	for _, s := range b.Replicas() {
		m[s.Name] = s.State.String()
	}
	return m
}

// TestSetReplicasEmpty: a balancer with no replicas fails its calls at
// once, naming its route, and works once it is given one.
func TestSetReplicasEmpty(t *testing.T) {
	probed := make(chan struct{})
	probe := func(ctx context.Context, r fanout.Backend[int64, int64]) error {
		<-probed
		_, err := r.Process(ctx, nil)
		return err
	}
	b, err := fanout.NewBalancer[int64, int64](nil, fanout.WithBalancerName("x"), fanout.WithProbe(probe, hangGuard))
	require.NoError(t, err)
	defer b.Close()
	_, err = b.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	require.EqualError(t, err, "fanout: backend unavailable: route x has no replicas")

	a := &setReplica{t: t, name: "a"}
	set := make(chan error, 1)
	go func() { set <- b.SetReplicas(setOf(a)) }()
	eventually(t, func() bool { return stateOf(b)["a"] == "probing" }, "a new replica to be probed")
	_, err = b.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrUnavailable, "no replica in service before its probe answered")
	select {
	case <-set:
		t.Fatal("SetReplicas returned before the new replica's first probe answered")
	default:
	}
	close(probed)
	require.NoError(t, <-set)
	assert.Equal(t, map[string]string{"a": "healthy"}, stateOf(b), "in service once SetReplicas has returned")
	out, err := b.Process(context.Background(), []int64{1})
	require.NoError(t, err)
	assert.Equal(t, []int64{1}, out)
	assert.Positive(t, a.calls.Load())

	require.NoError(t, b.SetReplicas(nil, nil))
	_, err = b.Process(context.Background(), []int64{1})
	require.ErrorIs(t, err, fanout.ErrUnavailable)
}

// TestSetReplicasDrains: a replica removed with a call in flight finishes
// that call, takes no new one, and is retired only once it has returned;
// a kept replica keeps its state.
func TestSetReplicasDrains(t *testing.T) {
	a := &setReplica{t: t, name: "a", gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	c := &setReplica{t: t, name: "c"}
	retired := make(chan string, 4)
	var b *fanout.Balancer[int64, int64]
	b, err := fanout.NewBalancer(func() []fanout.Backend[int64, int64] { bs, _ := setOf(a); return bs }(),
		fanout.WithReplicaNames("a"),
		fanout.WithRetire(func(be fanout.Backend[int64, int64]) {
			r := be.(*setReplica)
			r.retired.Store(true)
			retired <- r.name
		}))
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		out, err := b.Process(context.Background(), []int64{7})
		if err == nil && (len(out) != 1 || out[0] != 7) {
			err = fmt.Errorf("answer %v", out)
		}
		done <- err
	}()
	<-a.entered // the call is on a
	require.NoError(t, b.SetReplicas(setOf(c)))
	select {
	case name := <-retired:
		t.Fatalf("%s retired with a call in flight", name)
	default:
	}
	assert.Equal(t, "healthy", stateOf(b)["c"], "c joined")
	for range 20 {
		_, err := b.Process(context.Background(), []int64{1})
		require.NoError(t, err)
	}
	assert.EqualValues(t, 1, a.calls.Load(), "a removed takes no new call")
	close(a.gate)
	require.NoError(t, <-done, "the call in flight on the removed replica finishes")
	assert.Equal(t, "a", <-retired)

	require.NoError(t, b.Close())
	assert.Empty(t, retired)
}

// TestSetReplicasKeepsState: a replica named again keeps its health; the
// Backend given for it again is not used.
func TestSetReplicasKeepsState(t *testing.T) {
	down := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		return nil, fanout.ErrUnavailable
	})
	up := &setReplica{t: t, name: "up"}
	b, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{down, up}, fanout.WithReplicaNames("down", "up"),
		fanout.WithEjection(1, hangGuard, hangGuard))
	require.NoError(t, err)
	defer b.Close()
	for stateOf(b)["down"] != "ejected" {
		_, err := b.Process(context.Background(), []int64{1})
		require.NoError(t, err, "retried on up")
	}
	again := &setReplica{t: t, name: "down"}
	require.NoError(t, b.SetReplicas([]fanout.Backend[int64, int64]{again, up}, []string{"down", "up"}))
	assert.Equal(t, map[string]string{"down": "ejected", "up": "healthy"}, stateOf(b))
	assert.Zero(t, again.calls.Load())
}

func TestSetReplicasErrors(t *testing.T) {
	b, err := fanout.NewBalancer[int64, int64](nil)
	require.NoError(t, err)
	defer b.Close()
	a := &setReplica{t: t, name: "a"}
	var nilFunc fanout.BackendFunc[int64, int64]
	for _, tc := range []struct {
		name     string
		replicas []fanout.Backend[int64, int64]
		names    []string
		want     string
	}{
		{"lengths", []fanout.Backend[int64, int64]{a}, nil, "fanout: Balancer.SetReplicas: 0 names for 1 replica"},
		{"twice", []fanout.Backend[int64, int64]{a, a}, []string{"a", "a"}, `fanout: Balancer.SetReplicas: replica name "a" given twice`},
		{"nil", []fanout.Backend[int64, int64]{nilFunc}, []string{"n"}, `fanout: Balancer.SetReplicas: replica "n" is nil`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.EqualError(t, b.SetReplicas(tc.replicas, tc.names), tc.want)
			assert.Empty(t, b.Replicas(), "nothing changed")
		})
	}
}

// TestSetReplicasUnderLoad: calls run while the set changes again and
// again; none fails, every removed replica is retired once, and none is
// called after it was retired (setReplica checks).
func TestSetReplicasUnderLoad(t *testing.T) {
	var mu sync.Mutex
	retiredCount := map[string]int{}
	b, err := fanout.NewBalancer[int64, int64](nil, fanout.WithIdempotent(), fanout.WithRetire(func(be fanout.Backend[int64, int64]) {
		r := be.(*setReplica)
		r.retired.Store(true)
		mu.Lock()
		retiredCount[r.name]++
		mu.Unlock()
	}))
	require.NoError(t, err)
	first := &setReplica{t: t, name: "r0"}
	require.NoError(t, b.SetReplicas(setOf(first)))
	require.Equal(t, "healthy", stateOf(b)["r0"])

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := b.Process(context.Background(), []int64{1, 2}); err != nil && !errors.Is(err, fanout.ErrUnavailable) {
					failed.Add(1)
				}
			}
		})
	}
	// Each set keeps the previous replica and adds one, then drops the
	// previous: a replica in service always remains.
	prev := first
	for i := 1; i <= 30; i++ {
		next := &setReplica{t: t, name: fmt.Sprintf("r%d", i)}
		require.NoError(t, b.SetReplicas(setOf(prev, next)))
		require.Equal(t, "healthy", stateOf(b)[next.name], next.name+" joined")
		require.NoError(t, b.SetReplicas(setOf(next)))
		prev = next
	}
	cancel()
	wg.Wait()
	require.NoError(t, b.Close())
	assert.Zero(t, failed.Load())
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, retiredCount, 30)
	for name, n := range retiredCount {
		assert.Equal(t, 1, n, name)
	}
}
