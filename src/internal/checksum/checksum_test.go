package checksum

import "testing"

func TestInternet(t *testing.T) {
	// The IPv4 header example of RFC 1071's companion (Wikipedia's
	// "IPv4 header checksum"): checksum field zeroed, result 0xb861.
	h := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := Internet(h); got != 0xb861 {
		t.Fatalf("checksum %#04x, want 0xb861", got)
	}
	h[10], h[11] = 0xb8, 0x61
	if got := Internet(h); got != 0 {
		t.Fatalf("checksum over a header with its checksum %#04x, want 0", got)
	}
	if got := Internet([]byte{0x01}); got != ^uint16(0x0100) {
		t.Fatalf("odd length: %#04x", got)
	}
}
