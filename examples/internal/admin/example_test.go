package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/admin"
)

// A program's wiring: one Metrics observing its router and each route's
// balancer, the balancer's replicas registered by route, and the handler
// served on the program's admin address.
func Example() {
	m := admin.NewMetrics()
	double := fanout.BackendFunc[int, int](func(_ context.Context, items []int) ([]int, error) {
		out := make([]int, len(items))
		for i, n := range items {
			out[i] = 2 * n
		}
		return out, nil
	})
	b, err := fanout.NewBalancer([]fanout.Backend[int, int]{double, double},
		fanout.WithBalancerName("y"), fanout.WithReplicaNames("127.0.0.1:7002", "127.0.0.1:7012"),
		fanout.WithBalancerObserver(m))
	if err != nil {
		panic(err)
	}
	defer b.Close()
	m.AddRoute("y", b.Replicas)
	r, err := fanout.NewRouter(fanout.ClassifierFunc[int](func(int) (string, error) { return "y", nil }),
		map[string]fanout.Backend[int, int]{"y": b}, fanout.WithObserver(m))
	if err != nil {
		panic(err)
	}
	h := admin.Handler(admin.Options{Program: "middle", Metrics: m}) // a program serves it on -admin's address

	out, err := r.Process(context.Background(), []int{1, 2, 3})
	fmt.Println(out, err)
	st := m.Status()
	for _, rt := range st.Routes {
		fmt.Printf("route %s: %d call, %d errors\n", rt.Route, rt.Calls, rt.Errors)
		for _, p := range rt.Replicas {
			fmt.Printf("  %s %s\n", p.Replica, p.State)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	fmt.Print(rec.Code, " ", rec.Body)
	// Output:
	// [2 4 6] <nil>
	// route y: 1 call, 0 errors
	//   127.0.0.1:7002 healthy
	//   127.0.0.1:7012 healthy
	// 200 ready
}
