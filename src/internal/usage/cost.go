package usage

// Cost is what one probe round costs on the wire in one address family, in bytes, on an
// Ethernet-framed link (each frame's 14-byte Ethernet header included; a raw-IP cellular link
// carries 14 bytes a frame less, and no neighbour discovery), measured in the test bed with
// the device's link counters (TestProbeCostOnTheWire; README "Probe budgets and costs"): a
// round that succeeds at its first attempt, the probe host's address cached.
type Cost struct {
	Echo int // TCP with options: handshake, one byte each way and their ACKs, FIN both ways: 10 frames
	ICMP int // one echo request and its reply (12 bytes of payload): 2 frames
	HTTP int // TCP and GET probe_url, 204 back (measured with http://echo.afero.io:8204/generate_204)
	// DNS is one question for echo.afero.io (A, or AAAA in an IPv6 round) and its answer.
	DNS int
	// Neighbor is what a rare round (a minute or more after the last) brings besides: the
	// device and its next hop each find their neighbour entry for the other stale and check
	// it (an ARP request and reply, or a neighbour solicitation and advertisement, each way).
	Neighbor int
}

// Costs4 and Costs6 are the rounds of IPv4 and IPv6: an IPv6 header is 20 bytes longer a
// frame, an AAAA answer 12 bytes longer than an A one, a neighbour solicitation and
// advertisement 80 bytes longer than ARP.
var (
	Costs4 = Cost{Echo: 690, ICMP: 108, HTTP: 860, DNS: 180, Neighbor: 168}
	Costs6 = Cost{Echo: 890, ICMP: 140, HTTP: 1060, DNS: 238, Neighbor: 328}
)

// ProbeCost is what one round of method costs in its family (ipv6 or not). A rare round
// (rare: budgeted rounds, which come a minute or more apart) also resolves the name (the probe
// resolves at most once a minute) and brings both ends' neighbour checks.
func ProbeCost(method string, rare, ipv6 bool) int {
	c := Costs4
	if ipv6 {
		c = Costs6
	}
	n := c.Echo
	switch method {
	case "icmp":
		n = c.ICMP
	case "http":
		n = c.HTTP
	}
	if rare {
		n += c.DNS + c.Neighbor
	}
	return n
}
