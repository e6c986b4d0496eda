package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailed      = 1   // processing failed
	exitUsage       = 2   // bad usage or input
	exitInterrupted = 130 // the context given to Main ended: SIGINT, as a shell reports it
)

// DefaultTimeout is the default of -timeout: how long one call may take.
const DefaultTimeout = 10 * time.Second

// Connect returns the backend a [Command] sends its numbers to, and a
// function that releases it once the command is done. An error that is a
// [*UsageError], such as a bad flag value, makes the program exit with
// status 2; any other, with status 1.
type Connect func() (b fanout.Backend[int64, xyz.Result], release func(), err error)

// Command is a client program: its flags, input rules and output format.
type Command struct {
	name    string
	flags   *flag.FlagSet
	json    bool
	partial bool
	timeout time.Duration
}

// New returns the command of the program called name, which summary, the
// first line of its usage message, describes. It adds -json, -partial and
// -timeout to fs; the program defines its other flags (such as -addr) on fs
// itself, and their values are set once [Command.Main] has parsed the
// arguments.
func New(name, summary string, fs *flag.FlagSet) *Command {
	c := &Command{name: name, flags: fs}
	fs.BoolVar(&c.json, "json", false, "print one JSON array of {input, output, backend} objects")
	fs.BoolVar(&c.partial, "partial", false,
		"when numbers fail, print them in their place, with their backend and error, and go on; exit 1 at the end")
	fs.DurationVar(&c.timeout, "timeout", DefaultTimeout,
		"how long each call may take; a job from standard input makes a call per 131072 numbers (0: no limit)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `%s

usage: %s [flags] [number ...]

Prints each number's result and the backend that computed it, in input order.
Numbers come from the arguments if there are any, else from standard input:
a prompt on a terminal, else one job, sent in calls of up to 131072 numbers.

Exit status: 0 on success; 1 when processing failed; 2 for bad usage or a
token that is not an int64; 130 when interrupted (SIGINT, Ctrl-C).

Flags:
`, summary, name)
		fs.PrintDefaults()
	}
	return c
}

// Main parses args, connects, processes the numbers and prints the
// answers, reading stdin if args hold no numbers. When ctx ends (the program
// got SIGINT), the calls in flight are cancelled and Main returns 130. It
// returns the exit status; see the package documentation.
func (c *Command) Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, connect Connect) int {
	c.flags.SetOutput(stderr)
	numbers, err := c.parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		var ue *UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "%s: %v\n", c.name, err)
		} // else the flag set has printed the problem
		return exitUsage
	}

	b, release, err := connect()
	if err != nil {
		return c.report(err, stderr)
	}
	defer release()

	switch {
	case numbers != nil:
		err = c.run(ctx, b, chunks(numbers), stdout)
	case isTerminal(stdin):
		err = c.interactive(ctx, b, stdin, stdout, stderr)
	default:
		err = c.run(ctx, b, scan(stdin), stdout)
	}
	if err != nil && ctx.Err() != nil {
		fmt.Fprintf(stderr, "%s: interrupted\n", c.name)
		return exitInterrupted
	}
	return c.report(err, stderr)
}

// report prints err, if any, and returns the exit status it calls for.
func (c *Command) report(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "%s: %v\n", c.name, err)
	var ue *UsageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailed
}

// parse parses the flags in args and returns the numbers among them, or nil
// if there are none. A token that looks like a negative number is a number,
// even though it starts with a dash; everything after "--" is a number.
func (c *Command) parse(args []string) ([]int64, error) {
	var flagArgs, tokens []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			tokens = append(tokens, args[i+1:]...)
			i = len(args)
		case !strings.HasPrefix(a, "-") || a == "-" || looksNegative(a):
			tokens = append(tokens, a)
		default:
			flagArgs = append(flagArgs, a)
			if c.takesValue(a) && i+1 < len(args) {
				i++
				flagArgs = append(flagArgs, args[i])
			}
		}
	}
	if err := c.flags.Parse(flagArgs); err != nil {
		return nil, err
	}
	if c.timeout < 0 {
		return nil, &UsageError{fmt.Errorf("-timeout %v is negative", c.timeout)}
	}
	if len(tokens) == 0 {
		return nil, nil
	}
	numbers := make([]int64, len(tokens))
	for i, tok := range tokens {
		n, err := parseNumber(tok)
		if err != nil {
			return nil, err
		}
		numbers[i] = n
	}
	return numbers, nil
}

// looksNegative reports whether a starts like a negative number ("-3",
// "-1.5"): no flag name starts with a digit or a dot.
func looksNegative(a string) bool {
	return len(a) > 1 && a[0] == '-' && (a[1] >= '0' && a[1] <= '9' || a[1] == '.')
}

// takesValue reports whether the flag a ("-name" or "--name") takes the
// next argument as its value, as the flag package will.
func (c *Command) takesValue(a string) bool {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") {
		return false
	}
	f := c.flags.Lookup(name)
	if f == nil {
		return false // the flag set reports the unknown flag
	}
	if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
		return false
	}
	return true
}

// UsageError is bad usage or input: the program exits with status 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }

func (e *UsageError) Unwrap() error { return e.Err }

// parseNumber parses a decimal int64 or returns a usageError naming tok.
func parseNumber(tok string) (int64, error) {
	n, err := strconv.ParseInt(tok, 10, 64)
	if err == nil {
		return n, nil
	}
	const maxShown = 40
	if len(tok) > maxShown {
		tok = tok[:maxShown] + "..."
	}
	if errors.Is(err, strconv.ErrRange) {
		return 0, &UsageError{fmt.Errorf("%q is not an int64 (out of range)", tok)}
	}
	return 0, &UsageError{fmt.Errorf("%q is not an int64", tok)}
}

// isTerminal reports whether r is a terminal. A character device that is
// not one, such as /dev/null, is not.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && isTTY(f)
}
