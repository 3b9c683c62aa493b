package usage

// What one probe round costs on the wire, in bytes, on an Ethernet-framed
// link (each frame's 14-byte Ethernet header included; a raw-IP cellular
// link carries 14 bytes a frame less), measured in the test bed with the
// device's link counters (TestProbeCostOnTheWire; README "Probe costs"):
// a round that succeeds at its first attempt, the probe host's address
// cached. A round that resolves the name adds ProbeDNSCost (the probe
// resolves at most once a minute, so a round rarer than that always does).
const (
	EchoCost = 690 // TCP with options: handshake, one byte each way and their ACKs, FIN both ways: 10 frames
	ICMPCost = 108 // one echo request and its reply (12 bytes of payload): 2 frames
	HTTPCost = 860 // TCP and GET probe_url, 204 back (measured with http://echo.afero.io:8204/generate_204)
	// ProbeDNSCost is one A query and its answer for echo.afero.io.
	ProbeDNSCost = 180
)

// ProbeCost is what one round of method costs, the name resolution
// included when rounds come rarer than once a minute (rare is true).
func ProbeCost(method string, rare bool) int {
	c := EchoCost
	switch method {
	case "icmp":
		c = ICMPCost
	case "http":
		c = HTTPCost
	}
	if rare {
		c += ProbeDNSCost
	}
	return c
}
