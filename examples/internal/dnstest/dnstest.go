package dnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// A Record is an answer of the zone: see [A] and [SRV].
type Record struct {
	ip     netip.Addr // A or AAAA, when valid
	target string     // SRV, when ip is not valid: a fully qualified name
	port   uint16
}

// A returns an address record of ip: an A record for an IPv4 address, an
// AAAA record for an IPv6 one. It panics if ip is not an IP address, as a
// test's typo should fail it at once.
func A(ip string) Record {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		panic(fmt.Sprintf("dnstest.A: %v", err))
	}
	return Record{ip: addr.Unmap()}
}

// SRV returns a service record naming target on port, with priority 0 and
// weight 0.
func SRV(target string, port uint16) Record {
	return Record{target: dns.Fqdn(target), port: port}
}

// rr returns r as a resource record of name, or nil if r is not of type
// qtype.
func (r Record) rr(name string, qtype uint16) dns.RR {
	hdr := dns.RR_Header{Name: name, Rrtype: qtype, Class: dns.ClassINET, Ttl: 0}
	switch {
	case qtype == dns.TypeA && r.ip.Is4():
		return &dns.A{Hdr: hdr, A: r.ip.AsSlice()}
	case qtype == dns.TypeAAAA && r.ip.Is6():
		return &dns.AAAA{Hdr: hdr, AAAA: r.ip.AsSlice()}
	case qtype == dns.TypeSRV && !r.ip.IsValid():
		return &dns.SRV{Hdr: hdr, Target: r.target, Port: r.port}
	}
	return nil
}

// Server is a DNS server of a zone that changes; see the package doc.
type Server struct {
	servers []*dns.Server // those started: UDP, then TCP
	addr    string

	mu    sync.Mutex
	zone  map[string][]Record // by canonical name
	asked map[string]int      // questions by canonical name

	closeOnce sync.Once
	served    sync.WaitGroup
}

// Listen returns a server answering on addr, a host:port whose host is an
// IP address, over UDP and TCP on the same port (port 0 picks one free for
// both; see [Server.Addr]).
func Listen(addr string) (*Server, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, err
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			// The UDP port the system chose may be taken for TCP: with
			// port 0, choose another.
			if port == "0" && errors.Is(err, syscall.EADDRINUSE) && attempt < 20 {
				continue
			}
			return nil, err
		}
		return Serve(pc, l)
	}
}

// Serve returns a server answering on pc (UDP) and l (TCP), which it
// closes with [Server.Close]. It returns once both are served; if either
// cannot be, it closes both and returns the error.
func Serve(pc net.PacketConn, l net.Listener) (*Server, error) {
	s := &Server{addr: pc.LocalAddr().String(), zone: make(map[string][]Record), asked: make(map[string]int)}
	handler := dns.HandlerFunc(s.answer)
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: l, Handler: handler}} {
		started, failed := make(chan struct{}), make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		s.served.Add(1)
		go func() {
			defer s.served.Done()
			if err := srv.ActivateAndServe(); err != nil {
				failed <- err
			}
		}()
		select {
		case <-started:
			s.servers = append(s.servers, srv)
		case err := <-failed:
			s.Close()
			pc.Close()
			l.Close()
			return nil, fmt.Errorf("dnstest: serving %s: %w", s.addr, err)
		}
	}
	return s, nil
}

// Addr returns the address the server answers on, UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// Set makes records the answers for name from now on, replacing any it had.
// No records removes name: it is then answered NXDOMAIN.
func (s *Server) Set(name string, records ...Record) {
	name = dns.CanonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(records) == 0 {
		delete(s.zone, name)
		return
	}
	s.zone[name] = append([]Record(nil), records...)
}

// Asked returns how many questions about name the server has answered.
func (s *Server) Asked(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[dns.CanonicalName(name)]
}

// Close stops serving and closes the sockets. It is idempotent.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, srv := range s.servers {
			err = errors.Join(err, srv.ShutdownContext(ctx))
		}
		s.served.Wait()
	})
	return err
}

// answer answers a query of one question from the zone.
func (s *Server) answer(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	m.SetReply(req)
	m.Authoritative = true
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	s.mu.Lock()
	s.asked[name]++
	records, ok := s.zone[name]
	s.mu.Unlock()
	if !ok || q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeNameError
		w.WriteMsg(m)
		return
	}
	for _, r := range records {
		if rr := r.rr(q.Name, q.Qtype); rr != nil {
			m.Answer = append(m.Answer, rr)
		}
	}
	w.WriteMsg(m)
}
