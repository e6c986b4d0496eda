package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/seed-c94cd834/fanout"
)

func ExampleRouter() {
	// Negative numbers go to "neg", the others to "pos".
	classify := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		if n < 0 {
			return "neg", nil
		}
		return "pos", nil
	})
	square := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = n * n
		}
		return out, nil
	})
	half := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = n / 2
		}
		return out, nil
	})

	r, err := fanout.NewRouter(classify, map[string]fanout.Backend[int64, int64]{
		"neg": square,
		"pos": half,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Routes())

	// Both routes run at once; the answers come back in the caller's order.
	out, err := r.Process(context.Background(), []int64{-3, 10, -1, 4})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out)
	// Output:
	// [neg pos]
	// [9 5 1 2]
}

func ExampleWithPartialResults() {
	parity := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		if n%2 == 0 {
			return "even", nil
		}
		return "odd", nil
	})
	double := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = 2 * n
		}
		return out, nil
	})
	refuse := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, errors.New("odd numbers are not supported")
	})

	r, err := fanout.NewRouter(parity, map[string]fanout.Backend[int64, int64]{
		"even": double,
		"odd":  refuse,
	}, fanout.WithPartialResults())
	if err != nil {
		fmt.Println(err)
		return
	}

	out, err := r.Process(context.Background(), []int64{2, 3, 4, 5})
	fmt.Println(out)
	var pe *fanout.PartialError
	if errors.As(err, &pe) {
		for _, re := range pe.Failed {
			fmt.Printf("route %s failed for items %v: %v\n", re.Route, re.Indices, re.Err)
		}
	}
	// Output:
	// [4 0 8 0]
	// route odd failed for items [1 3]: odd numbers are not supported
}

func ExampleBackendFunc() {
	negate := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = -n
		}
		return out, nil
	})

	// negate is a fanout.Backend: it can be a route of a Router, or be served
	// over the network.
	var b fanout.Backend[int64, int64] = negate
	out, err := b.Process(context.Background(), []int64{1, -2, 3})
	fmt.Println(out, err)
	// Output:
	// [-1 2 -3] <nil>
}

func ExampleClassifierFunc() {
	errZero := errors.New("zero has no sign")
	sign := fanout.ClassifierFunc[int64](func(n int64) (string, error) {
		switch {
		case n < 0:
			return "negative", nil
		case n > 0:
			return "positive", nil
		default:
			return "", errZero
		}
	})

	for _, n := range []int64{-7, 7, 0} {
		route, err := sign.Classify(n)
		if err != nil {
			fmt.Printf("%d: error: %v\n", n, err)
			continue
		}
		fmt.Printf("%d: %s\n", n, route)
	}
	// Output:
	// -7: negative
	// 7: positive
	// 0: error: zero has no sign
}

// withoutTime drops the time from log lines, so that examples print the
// same lines every time.
func withoutTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 {
		return slog.Attr{}
	}
	return a
}

func ExampleBalancer() {
	double := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = 2 * n
		}
		return out, nil
	})
	// A replica that cannot be reached, as a transport client's calls fail
	// when nothing listens at its address.
	gone := fanout.BackendFunc[int64, int64](func(context.Context, []int64) ([]int64, error) {
		return nil, fmt.Errorf("dial 10.0.0.2:7002: %w", fanout.ErrUnavailable)
	})
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: withoutTime}))

	b, err := fanout.NewBalancer([]fanout.Backend[int64, int64]{double, gone},
		fanout.WithIdempotent(),
		fanout.WithEjection(3, time.Second, 30*time.Second),
		fanout.WithProbeTimeout(500*time.Millisecond),
		fanout.WithBalancerLogger(log),
		fanout.WithReplicaNames("10.0.0.1:7002", "10.0.0.2:7002"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	// At start, take the replicas that cannot be reached out of service:
	// they take calls again once a probe shows they are back.
	if err := b.Check(context.Background()); err != nil {
		fmt.Println("check:", err)
	}
	for range 3 {
		out, err := b.Process(context.Background(), []int64{1, 2, 3})
		fmt.Println(out, err)
	}
	// Output:
	// level=WARN msg="fanout: replica failed its check; ejected" replica=10.0.0.2:7002 index=1 ejected_for=1s ejections=1 in_service=1 err="dial 10.0.0.2:7002: backend unavailable"
	// check: replica 1 (10.0.0.2:7002): dial 10.0.0.2:7002: backend unavailable
	// [2 4 6] <nil>
	// [2 4 6] <nil>
	// [2 4 6] <nil>
}

func ExampleLimiter() {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		close(entered)
		<-release
		return items, nil
	})
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: withoutTime}))
	l, err := fanout.NewLimiter(slow, 1, fanout.WithLimiterLogger(log))
	if err != nil {
		fmt.Println(err)
		return
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		out, err := l.Process(context.Background(), []int64{1})
		fmt.Println("first call:", out, err)
	}()
	<-entered

	// The bound is reached: the next call is refused at once, not queued.
	_, err = l.Process(context.Background(), []int64{2})
	fmt.Println("second call:", err, errors.Is(err, fanout.ErrOverloaded))

	close(release)
	<-done
	// Output:
	// level=WARN msg="fanout: limiter shed load" shed=1 max_in_flight=1
	// second call: fanout: overloaded: 1 call already in flight true
	// first call: [1] <nil>
}

func ExampleBatcher() {
	var mu sync.Mutex
	var batches [][]int64 // what the backend is sent
	entered, release := make(chan struct{}, 1), make(chan struct{})
	square := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		mu.Lock()
		batches = append(batches, slices.Clone(items))
		mu.Unlock()
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = n * n
		}
		return out, nil
	})
	b, err := fanout.NewBatcher(square, fanout.WithConcurrency(1), fanout.WithMaxBatch(4))
	if err != nil {
		fmt.Println(err)
		return
	}

	results := make([]string, 3)
	var wg sync.WaitGroup
	call := func(k int, items ...int64) {
		wg.Go(func() {
			out, err := b.Process(context.Background(), items)
			results[k] = fmt.Sprint(items, " -> ", out, " ", err)
		})
	}
	// The first call goes to the backend at once; the next two arrive while
	// it is busy and wait in the queue, in turn.
	call(0, 1)
	<-entered
	call(1, 2, 3)
	for b.Queued() < 2 {
		runtime.Gosched()
	}
	call(2, 4, 5, 6)
	for b.Queued() < 5 {
		runtime.Gosched()
	}
	// Once the backend is free, the queue goes in calls of up to 4 items:
	// the second caller's and the start of the third's, then the rest.
	close(release)
	wg.Wait()

	fmt.Println("backend calls:", batches)
	for _, r := range results {
		fmt.Println(r)
	}
	// Output:
	// backend calls: [[1] [2 3 4 5] [6]]
	// [1] -> [1] <nil>
	// [2 3] -> [4 9] <nil>
	// [4 5 6] -> [16 25 36] <nil>
}
