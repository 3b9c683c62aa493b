package testbed

import (
	"bytes"
	"testing"
)

// The test bed's DHCPv6 server reads the options of whatever arrives on port 547: it never
// panics, and finds an option appended after any well-formed list.
func FuzzDHCPv6Option(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 0xaa, 0xbb}, uint16(1))
	f.Add([]byte{0, 1, 0xff, 0xff}, uint16(2))
	f.Add([]byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, opts []byte, code uint16) {
		dhcpv6Option(opts, code)
		// A well-formed list of one option of another code, then ours: ours is found.
		other := code + 1
		b := appendDHCPv6Option(nil, other, opts[:min(len(opts), 300)])
		b = appendDHCPv6Option(b, code, []byte("x"))
		if got := dhcpv6Option(b, code); !bytes.Equal(got, []byte("x")) {
			t.Fatalf("option %d in %x: %x", code, b, got)
		}
	})
}
