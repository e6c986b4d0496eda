package faultproxy

import "time"

// AwaitConns waits until cond holds of how many connections p has accepted
// and how many it has open (not yet forgotten once they ended), woken
// whenever either changes, or until guard has passed. It reports whether
// cond held.
func AwaitConns(p *Proxy, guard time.Duration, cond func(accepted, open int) bool) bool {
	timer := time.NewTimer(guard)
	defer timer.Stop()
	for {
		p.mu.Lock()
		ok, changed := cond(p.accepted, len(p.conns)), p.connsChanged
		p.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		}
	}
}
