package transport

// hookEvent names a point of a server's work that tests wait for, rather
// than sleep until it has probably been reached. A server tells its hook,
// which only tests set (export_test.go), when it gets there.
type hookEvent uint8

const (
	hookWaitingForRoom hookEvent = iota // a request starts to wait for room in the byte budget
	hookWatching                        // the sweeper starts a watcher for a call that has run long
	hookAnswered                        // a call's answer has been written, or its write failed
	hookStreamEnded                     // a stream's goroutine ends, the stream closed and forgotten
	hookConnEnded                       // a connection is closed and forgotten
	hookSweepStarted                    // a sweeper starts
	hookSweepEnded                      // a sweeper ends
	hookUnwritten                       // a call's answer could not be written (its client did not read it within the write timeout), and its stream is closed
	hookStalled                         // a request's payload (with room, or being dropped) stopped arriving for the stall timeout, and is refused
	hookIdleClosed                      // a stream idle for the idle timeout is closed
	hookDropping                        // a large request sent whole found no room: the server told its client to wait and drops its payload
	numHookEvents
)

// reached tells the server's hook, if it has one, that ev happened.
func (s *Server[In, Out]) reached(ev hookEvent) {
	if s.hook != nil {
		s.hook(ev)
	}
}
