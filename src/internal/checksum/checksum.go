// Package checksum owns the Internet checksum (RFC 1071) that IPv4, ICMP,
// UDP and TCP headers carry: the probe's ICMP echo requests and the
// testbed's hand-made packets use it.
package checksum

// Internet returns the ones' complement of the ones' complement sum of b
// taken as big-endian 16-bit words (an odd last byte padded with zero).
func Internet(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
