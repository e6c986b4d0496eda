package fanout

import "time"

// Hooks into a Shadow for its tests. Set them before the shadow's first
// call.

// SetShadowClock makes s read the time of its log lines from now, so that a
// test decides when a second has passed.
func SetShadowClock[In, Out any](s *Shadow[In, Out], now func() time.Time) {
	s.now = now
}

// SetShadowCompared makes s call compared after each mirrored call it has
// compared (or found cancelled by Close), so that a test waits for a
// comparison rather than for time to pass.
func SetShadowCompared[In, Out any](s *Shadow[In, Out], compared func()) {
	s.compared = compared
}
