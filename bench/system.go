package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/seed-c94cd834/fanout/transport"
)

// A system is one implementation of the scatter-gather under test: a middle
// layer and the backends x, y and z, each its own process, and the client
// side of the load.
type system struct {
	name string
	// program returns the executable and leading arguments of the server of
	// role "x", "y", "z" or "middle". Every server also takes -listen ADDR,
	// and the middle layer -x ADDR -y ADDR -z ADDR.
	program func(role string) (exe string, args []string)
	// connect returns the client side of the middle layer at addr.
	connect func(ctx context.Context, addr string) (target, error)
}

// target is the client side of a running system's middle layer.
type target interface {
	// caller returns what one load goroutine sends its calls with: a client
	// shared by all goroutines, or a connection of its own, as is usual
	// for the system.
	caller() (caller, error)
	// Close closes every connection the target opened.
	Close() error
}

// caller sends a batch to the middle layer and returns its answers.
type caller interface {
	Process(ctx context.Context, items []int64) ([]Result, error)
}

// sharedTarget gives every load goroutine the same client.
type sharedTarget struct {
	client interface {
		caller
		io.Closer
	}
}

func (t sharedTarget) caller() (caller, error) { return t.client, nil }
func (t sharedTarget) Close() error            { return t.client.Close() }

// fanoutSystem runs the example programs of the parent module, built into
// binDir, the middle layer with middleArgs, and calls the middle layer with the library's transport client.
func fanoutSystem(binDir string, middleArgs []string) system {
	return system{
		name: "fanout",
		program: func(role string) (string, []string) {
			if role == "middle" {
				return filepath.Join(binDir, role), middleArgs
			}
			return filepath.Join(binDir, role), nil
		},
		connect: connectFanout,
	}
}

// connectFanout connects to the example middle layer at addr with the
// library's client. The middle layer answers in version 3 of the result
// codec, or in version 2 or 1 in older trees, so the client offers each in
// turn.
func connectFanout(ctx context.Context, addr string) (target, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var err error
	for _, codec := range []resultCodec{{version: 3}, {version: 2}, {version: 1}} {
		var c *transport.Client[int64, Result]
		c, err = transport.Dial(ctx, addr, transport.Int64(), codec, transport.WithLogger(log))
		if err == nil {
			return sharedTarget{c}, nil
		}
		if !errors.Is(err, transport.ErrHandshake) {
			break
		}
	}
	return nil, err
}

// buildExamples builds the example programs x, y, z, middle and loadgen
// of the module in root into dir.
func buildExamples(root, dir string) error {
	dir, err := filepath.Abs(dir) // -C makes a relative path relative to root
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-C", root, "-o", dir+string(filepath.Separator),
		"./examples/x", "./examples/y", "./examples/z", "./examples/middle", "./examples/loadgen")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// roleSystem runs the servers of kind "raw", "grpc" or "yamux" as roles of
// this program, exe (see runRole).
func roleSystem(name, kind, exe string, connect func(context.Context, string) (target, error)) system {
	return system{
		name: name,
		program: func(role string) (string, []string) {
			return exe, []string{"role", kind, role}
		},
		connect: connect,
	}
}

// deployment is a running system.
type deployment struct {
	servers []*proc // x, y, z, middle
	target  target
}

// middle returns the middle layer's process.
func (d *deployment) middle() *proc { return d.servers[len(d.servers)-1] }

// deploy starts fresh processes of sys and connects to its middle layer.
func deploy(ctx context.Context, sys system) (*deployment, error) {
	d := &deployment{}
	start := func(role string, flags ...string) error {
		exe, args := sys.program(role)
		p, err := startProc(ctx, sys.name+" "+role, exe, append(args, flags...)...)
		if err == nil {
			d.servers = append(d.servers, p)
		}
		return err
	}
	for _, route := range routes {
		if err := start(route); err != nil {
			d.stop()
			return nil, err
		}
	}
	if err := start("middle", "-x", d.servers[0].addr, "-y", d.servers[1].addr, "-z", d.servers[2].addr); err != nil {
		d.stop()
		return nil, err
	}
	t, err := sys.connect(ctx, d.middle().addr)
	if err != nil {
		d.stop()
		return nil, err
	}
	d.target = t
	return d, nil
}

// stop closes the client side and stops every server.
func (d *deployment) stop() {
	if d.target != nil {
		d.target.Close()
	}
	var wg sync.WaitGroup
	for _, p := range d.servers {
		wg.Go(p.stop)
	}
	wg.Wait()
}
