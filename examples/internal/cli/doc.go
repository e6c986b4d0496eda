// Package cli is the user-facing part of the client and demo programs: it
// reads numbers from the command line or from standard input, sends them to
// a middle layer and prints the answers.
//
// Input: the numbers are the arguments if there are any, else standard
// input. Arguments that look like negative numbers ("-3") are numbers, not
// flags, with or without a "--" before them. On a terminal, each line of
// input is one request: its answers are printed, an error is printed and the
// prompt ("> ") goes on; "quit" or end of input leaves. Otherwise all of
// standard input is one job, read as it streams in and sent in calls of up
// to 65536 numbers, a few at a time; answers are printed as they arrive, in
// input order.
//
// Output: one line per number, "N -> RESULT (backend B)", for example
// "-3 -> 9 (backend x)". With -json, one JSON array with an object per
// number, in input order: {"input": -3, "output": 9, "backend": "x"}.
//
// Exit status: 0 on success; 1 when processing failed (the error, printed on
// standard error, names the number and the backend); 2 for bad usage or a
// token that is not an int64 (the message names the token). Standard input
// is checked as it is read: the answers to the numbers before a bad token
// are printed, then the program exits with status 2. After a failure,
// output stops where the failure happened; with -json the array is left
// unclosed, so that a partial answer never parses as a complete one.
package cli
