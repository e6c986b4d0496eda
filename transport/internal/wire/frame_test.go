package wire

import (
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestTruncateKeepsUTF8Whole(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 3, "abc"},
		{"abc", 2, "ab"},
		{"abc", -1, ""},
		{"aé", 2, "a"},  // é is 2 bytes: do not keep half of it
		{"a€b", 3, "a"}, // € is 3 bytes
		{"a€b", 4, "a€"},
	}
	for _, tt := range tests {
		got := Truncate(tt.in, tt.n)
		require.Equal(t, tt.want, got, "Truncate(%q, %d)", tt.in, tt.n)
		require.True(t, utf8.ValidString(got))
	}
}
