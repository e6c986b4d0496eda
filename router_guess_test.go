package fanout

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRouterGuessesNeverChooseTheRoute gives the router route names that
// share a guess slot, and a classifier that returns each name sometimes as
// a constant and sometimes as a fresh copy: every item must still reach the
// route whose name its classifier returned, whatever the guesses say.
func TestRouterGuessesNeverChooseTheRoute(t *testing.T) {
	// Names of one length and last byte whose first bytes differ by 64
	// share a slot; find two such pairs among routes with other names.
	names := []string{"!k", "ak", "#z", "cz", "k", "kk", "long-route-name"}
	require.Equal(t, guessSlot("!k"), guessSlot("ak"), "the test needs names that share a slot")
	require.Equal(t, guessSlot("#z"), guessSlot("cz"), "the test needs names that share a slot")

	routes := make(map[string]Backend[int64, string])
	for _, name := range names {
		routes[name] = BackendFunc[int64, string](func(_ context.Context, items []int64) ([]string, error) {
			out := make([]string, len(items))
			for i := range out {
				out[i] = name
			}
			return out, nil
		})
	}
	// Item n goes to names[n%len(names)]; odd items get a copy of the name,
	// which shares no memory with the router's.
	classify := ClassifierFunc[int64](func(n int64) (string, error) {
		name := names[n%int64(len(names))]
		if n%2 == 1 {
			name = strings.Clone(name)
		}
		return name, nil
	})
	r, err := NewRouter(classify, routes)
	require.NoError(t, err)

	items := make([]int64, 10_000)
	for i := range items {
		items[i] = int64((i * 7919) % 1_000_003) // every route, in no regular order
	}
	out, err := r.Process(context.Background(), items)
	require.NoError(t, err)
	for i, n := range items {
		require.Equal(t, names[n%int64(len(names))], out[i], "item %d (%d)", i, n)
	}

	// A name no route has is refused, even one that shares its slot with a
	// route that items before it went to.
	unknown := ""
	for c := 'A'; c <= 'z' && unknown == ""; c++ {
		if name := "ax" + string(c); guessSlot(name) == guessSlot("ak") {
			unknown = name
		}
	}
	require.NotEmpty(t, unknown, "the test needs an unknown name in the slot of \"ak\"")
	bad := ClassifierFunc[int64](func(n int64) (string, error) {
		if n == 3 {
			return unknown, nil
		}
		return "ak", nil
	})
	r, err = NewRouter(bad, routes)
	require.NoError(t, err)
	_, err = r.Process(context.Background(), []int64{0, 1, 2, 3, 4})
	var ie *ItemError
	require.ErrorAs(t, err, &ie)
	require.ErrorIs(t, err, ErrNoRoute)
	require.Equal(t, 3, ie.Index)
	require.Equal(t, unknown, ie.Route)
}
