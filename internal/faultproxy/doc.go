// Package faultproxy is an in-process TCP proxy that injects network faults
// between two peers, for tests.
//
// A [Proxy] listens on a free loopback port and forwards every connection it
// accepts to a target address. A test points its client at [Proxy.Addr]
// instead of the server and then, at any moment and from any goroutine,
// makes the network misbehave:
//
//   - [Proxy.SetLatency] delays every chunk of bytes, per direction;
//   - [Proxy.SetBlackHole] stops all forwarding while keeping connections
//     open, like a network partition;
//   - [Proxy.Reset] aborts every open connection with a TCP RST;
//   - [Proxy.CutAfter] closes connections once they have forwarded a given
//     number of further bytes, so that a long message arrives partially;
//   - [Proxy.Close] stops the proxy and waits for all of its goroutines.
//
// A typical test:
//
//	p, err := faultproxy.New(serverAddr)
//	if err != nil {
//		t.Fatal(err)
//	}
//	t.Cleanup(func() { p.Close() })
//	client := newClient(p.Addr())
//	...
//	p.SetBlackHole(true) // the network goes silent
//	...
//	p.SetBlackHole(false) // and comes back
//
// Faults apply to the bytes on the connections, never to their meaning: the
// proxy knows nothing of the protocol it carries. Bytes are delivered in
// order and none is lost or altered except where a connection is closed.
//
// This is test support code. It lives in an ordinary (non-_test) package so
// that the tests of several packages can import it, but it is internal to the
// module and no production code uses it. It favours clarity over speed: it
// copies every chunk it forwards.
package faultproxy
