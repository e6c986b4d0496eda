package node

import (
	"net"
	"sync"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// System is the whole example system running in one process: the x, y and
// z backends and the middle layer, each serving on a loopback TCP port of
// its own, talking to each other over the transport as separate programs
// would.
type System struct {
	Addr    string   // the middle layer's address
	Middle  *Middle  // the middle layer
	servers []Server // the middle layer last
	serving sync.WaitGroup
}

// StartSystem starts x, y, z and the middle layer on free loopback ports.
// opts apply to every server and client in it.
func StartSystem(opts ...transport.Option) (*System, error) {
	s := &System{}
	replicas := make(map[string][]string)
	for _, route := range xyz.Routes() {
		srv, err := NewBackend(BackendConfig{Route: route}, Both(opts...).Server...)
		if err != nil {
			s.Close()
			return nil, err
		}
		addr, err := s.serve(srv)
		if err != nil {
			s.Close()
			return nil, err
		}
		replicas[route] = []string{addr}
	}
	m, err := NewMiddle(MiddleConfig{Replicas: replicas}, Both(opts...))
	if err != nil {
		s.Close()
		return nil, err
	}
	s.Middle = m
	if s.Addr, err = s.serve(m); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *System) serve(srv Server) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return "", err
	}
	s.servers = append(s.servers, srv)
	s.serving.Go(func() { srv.Serve(l) })
	return l.Addr().String(), nil
}

// Close stops every server at once, the middle layer first, and waits for
// them to return. It returns nil.
func (s *System) Close() error {
	for i := len(s.servers) - 1; i >= 0; i-- {
		s.servers[i].Close()
	}
	s.serving.Wait()
	return nil
}
