package fanout

// RouterOption configures a [Router]. The zero configuration (no options) is the
// documented default of every option.
type RouterOption func(*routerConfig)

type routerConfig struct {
	partial bool
}

// WithPartialResults makes a [Router] return the answers of the routes that
// succeeded even when others failed.
//
// Default: off. A router without it stops at the first failing route: that
// route's error cancels the context given to the other routes and the call
// returns no results.
//
// With it, every route runs to completion on the caller's context. If any
// route failed, Process returns a [*PartialError] listing each failed route
// with its item indices, together with the results of the successful routes
// (failed positions hold zero values). If every route that received items
// failed, the results are nil: there is nothing partial to return.
func WithPartialResults() RouterOption {
	return func(c *routerConfig) { c.partial = true }
}
