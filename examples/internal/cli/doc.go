// Package cli is the user-facing part of the client and demo programs: it
// reads numbers from the command line or from standard input, sends them to
// a middle layer and prints the answers.
//
// Input: the numbers are the arguments if there are any, else standard
// input. Arguments that look like negative numbers ("-3") are numbers, not
// flags, with or without a "--" before them. On a terminal, each line of
// input is one request: its answers are printed, an error is printed and the
// prompt ("> ", on standard error) goes on; "quit" or "exit", in any case,
// or end of input (Ctrl-D) leaves.
// Otherwise (a pipe, a file, /dev/null) all of standard input is one job,
// read as it streams in and sent in calls of up to 131072 numbers, a few at
// a time; answers are printed as they arrive, in input order.
//
// Each call must be answered within -timeout (default 10s; 0 for no limit):
// for a job from standard input, each call of up to 131072 numbers has the
// whole -timeout to itself. A call that takes longer fails with an error
// that says so ("no answer within 2s (-timeout)").
//
// Output: one line per number, "N -> RESULT (backend B)", for example
// "-3 -> 9 (backend x)". With -json, one JSON array with an object per
// number, in input order: {"input": -3, "output": 9, "backend": "x"}.
//
// Failures: the middle layer answers each number a backend could not
// process with that backend's name and error (see xyz.PerItem). By default
// the first such answer is an error that names the number and the backend,
// and the program stops there. With -partial, a failed number is printed in
// its place, "7 -> failed (backend z): ERROR", or in JSON
// {"input": 7, "backend": "z", "error": "ERROR"}, the job goes on, and at
// the end the program reports how many numbers failed and exits with
// status 1. A call that fails as a whole (the middle layer is down, the
// call timed out) stops the program either way.
//
// Exit status: 0 on success; 1 when processing failed (the error, printed on
// standard error, names the number and the backend); 2 for bad usage or a
// token that is not an int64 (the message names the token); 130 when the
// program is interrupted (SIGINT, Ctrl-C: the calls in flight are cancelled,
// up to the backends, and the program says "interrupted"). Standard input
// is checked as it is read: the answers to the numbers before a bad token
// are printed, then the error, which names the token and its line
// ("line 3: "1.5" is not an int64"), and the program exits with status 2. After a failure,
// output stops where the failure happened; with -json the array is left
// unclosed, so that a partial answer never parses as a complete one. With
// -partial, failed numbers are part of the answer and the array is closed.
package cli
