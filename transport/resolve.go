package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// A Resolver finds the addresses (host:port) of a route's replicas, for
// [Watch] to keep a [fanout.Balancer]'s replicas up to date. Resolve is
// called again and again; an error means the set is not known now (the
// caller keeps the last one it knew), while an empty list with no error is
// a set with no replicas.
type Resolver interface {
	Resolve(ctx context.Context) ([]string, error)
	// String names the resolver in logs and errors: "dns:x.svc:7001".
	String() string
}

// Static is a Resolver of a fixed list of addresses.
type Static []string

// Resolve returns the addresses.
func (s Static) Resolve(context.Context) ([]string, error) { return slices.Clone(s), nil }

func (s Static) String() string { return strings.Join(s, ",") }

// DNS returns a Resolver of every address (A and AAAA records) of name,
// each with port, looked up with r (nil: net.DefaultResolver). An IPv6
// address is given in brackets ("[2001:db8::1]:7001"). The addresses are
// sorted, so that the same records make the same set. A name that does not
// exist, or has no address records, is the empty set, not an error: DNS
// answered. A lookup that fails (no answer, a server failure) is an
// error.
func DNS(name, port string, r *net.Resolver) Resolver {
	return &dnsResolver{name: name, port: port, r: r}
}

type dnsResolver struct {
	name, port string
	r          *net.Resolver
}

func (d *dnsResolver) Resolve(ctx context.Context) ([]string, error) {
	r := cmpResolver(d.r)
	ips, err := r.LookupIPAddr(ctx, d.name)
	if notFound(err) {
		return []string{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip.String(), d.port))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (d *dnsResolver) String() string { return "dns:" + net.JoinHostPort(d.name, d.port) }

// SRV returns a Resolver of the targets of name's SRV records, each with
// the port its record gives, looked up with r (nil: net.DefaultResolver)
// as net.Resolver.LookupSRV("", "", name) does: name is the whole record
// name, "_fanout._tcp.x.svc.cluster.local" say. Priorities and weights are
// not used: every target is a replica, and the balancer spreads the load.
// As for [DNS], a name with no records is the empty set.
func SRV(name string, r *net.Resolver) Resolver { return &srvResolver{name: name, r: r} }

type srvResolver struct {
	name string
	r    *net.Resolver
}

func (s *srvResolver) Resolve(ctx context.Context) ([]string, error) {
	_, srvs, err := cmpResolver(s.r).LookupSRV(ctx, "", "", s.name)
	if notFound(err) {
		return []string{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(srvs))
	for _, srv := range srvs {
		out = append(out, net.JoinHostPort(strings.TrimSuffix(srv.Target, "."), strconv.Itoa(int(srv.Port))))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (s *srvResolver) String() string { return "srv:" + s.name }

// notFound reports whether err says the name has no records (NXDOMAIN, or
// no records of the type asked): an answer, the empty set, not a failure
// to resolve. A Kubernetes headless Service with no ready pod answers so.
func notFound(err error) bool {
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.IsNotFound
}

func cmpResolver(r *net.Resolver) *net.Resolver {
	if r == nil {
		return net.DefaultResolver
	}
	return r
}

// File returns a Resolver of the addresses listed in the file at path, one
// host:port a line; blank lines and lines starting with # are skipped. The
// file is read again on every Resolve (it is small), so a change is seen at
// the next one. A file that cannot be read, or a line that is not host:port,
// is an error naming the file and the line.
func File(path string) Resolver { return fileResolver(path) }

type fileResolver string

func (f fileResolver) Resolve(context.Context) ([]string, error) {
	data, err := os.ReadFile(string(f))
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
			return nil, fmt.Errorf("%s:%d: %q is not host:port", string(f), line, s)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (f fileResolver) String() string { return "file:" + string(f) }

// ParseTarget returns the Resolver of a replica list as the example
// programs take it: a comma-separated list of items, each an address
// (host:port), "dns:NAME:PORT" ([DNS]), "srv:NAME" ([SRV]) or
// "file:PATH" ([File]; a path holding a comma cannot be given). A list of
// addresses only is [Static]; otherwise the resolver returns the union of
// its items' addresses, and fails if any item fails. dns and srv use r
// (nil: net.DefaultResolver).
func ParseTarget(target string, r *net.Resolver) (Resolver, error) {
	if strings.TrimSpace(target) == "" {
		return nil, errors.New("no replicas given")
	}
	var static Static
	var dynamic []Resolver
	for _, item := range strings.Split(target, ",") {
		item = strings.TrimSpace(item)
		kind, rest, found := strings.Cut(item, ":")
		switch {
		case found && kind == "dns":
			host, port, err := net.SplitHostPort(rest)
			if err != nil || host == "" || port == "" {
				return nil, fmt.Errorf("%q: want dns:NAME:PORT", item)
			}
			dynamic = append(dynamic, DNS(host, port, r))
		case found && kind == "srv":
			if rest == "" {
				return nil, fmt.Errorf("%q: want srv:NAME", item)
			}
			dynamic = append(dynamic, SRV(rest, r))
		case found && kind == "file":
			if rest == "" {
				return nil, fmt.Errorf("%q: want file:PATH", item)
			}
			dynamic = append(dynamic, File(rest))
		default:
			if _, port, err := net.SplitHostPort(item); err != nil || port == "" {
				return nil, fmt.Errorf("%q is not host:port, dns:NAME:PORT, srv:NAME or file:PATH", item)
			}
			static = append(static, item)
		}
	}
	if len(dynamic) == 0 {
		return static, nil
	}
	if len(static) > 0 {
		dynamic = append(dynamic, static)
	}
	if len(dynamic) == 1 {
		return dynamic[0], nil
	}
	return union(dynamic), nil
}

// union is the Resolver of the addresses of all of its resolvers.
type union []Resolver

func (u union) Resolve(ctx context.Context) ([]string, error) {
	var out []string
	for _, r := range u {
		addrs, err := r.Resolve(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		out = append(out, addrs...)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (u union) String() string {
	names := make([]string, len(u))
	for i, r := range u {
		names[i] = r.String()
	}
	return strings.Join(names, ",")
}
