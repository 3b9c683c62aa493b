package testbed

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Record is one answer the cloud's DNS server gives. Exactly one of A/AAAA/CNAME is set.
type Record struct {
	Name  string // owner, e.g. "echo.afero.io" (case and trailing dot do not matter)
	TTL   uint32
	Addr  netip.Addr // A or AAAA
	CNAME string
}

// DNSServer is the cloud's authoritative server on 198.19.0.53:53 (UDP and TCP). It answers
// from its record set, following CNAMEs inside it like a recursive resolver would, and
// REFUSED for names it does not know.
type DNSServer struct {
	mu      sync.Mutex
	records map[string][]Record
	delay   time.Duration
	queries atomic.Int64
	servers []*dns.Server
	// dns64, when valid, makes the IPv6 listeners a DNS64: an AAAA question whose name has
	// A records but no AAAA gets the A records synthesized into this prefix.
	dns64 netip.Prefix
}

// DefaultRecords are what a world's DNS knows unless a test replaces them: the echo host and
// the cloud names of the seed's production whitelist, all at the echo address.
func DefaultRecords() []Record {
	var rs []Record
	for _, n := range []string{"echo.afero.io", "conclave.afero.io", "conclave-stream.afero.io", "aft.afero.io"} {
		rs = append(rs, Record{Name: n, TTL: 60, Addr: EchoAddr})
	}
	return rs
}

// DefaultRecords6 are the AAAA records of a dual-stack cloud: the names of DefaultRecords at
// Echo6Addr. Without them a name has only its A record (what a DNS64 synthesizes from).
func DefaultRecords6() []Record {
	var rs []Record
	for _, r := range DefaultRecords() {
		rs = append(rs, Record{Name: r.Name, TTL: r.TTL, Addr: Echo6Addr})
	}
	return rs
}

// StartDNS starts the cloud's DNS server with the given records, on DNSAddr and, in a
// dual-stack world, on DNS6Addr too (a DNS64 there with Options.DNS64).
func (w *World) StartDNS(records []Record) (*DNSServer, error) {
	addrs := []netip.Addr{DNSAddr}
	if w.dualStack() {
		addrs = append(addrs, DNS6Addr)
	}
	s := &DNSServer{}
	if w.opt.DNS64 {
		s.dns64 = NAT64Prefix
	}
	return s, w.serveDNS(s, addrs, records)
}

// StartDNSIn starts a DNS server in namespace ns (a router's, for a resolver on the uplink's
// own link) on addr, which may be link-local with its zone (fe80::1%todev).
func (w *World) StartDNSIn(ns *NS, addr netip.Addr, records []Record) (*DNSServer, error) {
	s := &DNSServer{}
	s.SetRecords(records)
	return s, w.serveDNSIn(ns, s, []netip.Addr{addr})
}

// StartDNSAt starts a DNS server like the cloud's on another address of the cloud (which the
// caller has added), e.g. a rogue resolver; an IPv6 address makes it an IPv6 one.
func (w *World) StartDNSAt(addr netip.Addr, records []Record) (*DNSServer, error) {
	s := &DNSServer{}
	return s, w.serveDNS(s, []netip.Addr{addr}, records)
}

// serveDNS starts s on port 53 of addrs, UDP and TCP, in the cloud.
func (w *World) serveDNS(s *DNSServer, addrs []netip.Addr, records []Record) error {
	s.SetRecords(records)
	return w.serveDNSIn(w.Cloud, s, addrs)
}

// serveDNSIn starts s on port 53 of addrs, UDP and TCP, in ns.
func (w *World) serveDNSIn(ns *NS, s *DNSServer, addrs []netip.Addr) error {
	for _, addr := range addrs {
		fam := "4"
		if addr.Is6() {
			fam = "6"
		}
		udp, err := ns.ListenPacket("udp"+fam, netip.AddrPortFrom(addr, 53).String())
		if err != nil {
			return fmt.Errorf("testbed: dns udp: %w", err)
		}
		tcp, err := ns.Listen("tcp"+fam, netip.AddrPortFrom(addr, 53).String())
		if err != nil {
			udp.Close()
			return fmt.Errorf("testbed: dns tcp: %w", err)
		}
		s.servers = append(s.servers, &dns.Server{PacketConn: udp, Handler: s}, &dns.Server{Listener: tcp, Handler: s})
	}
	for _, srv := range s.servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
	}
	w.OnClose(func() error {
		for _, srv := range s.servers {
			srv.Shutdown()
		}
		return nil
	})
	return nil
}

// SetRecords replaces the record set.
func (s *DNSServer) SetRecords(records []Record) {
	m := map[string][]Record{}
	for _, r := range records {
		k := dns.Fqdn(strings.ToLower(r.Name))
		m[k] = append(m[k], r)
	}
	s.mu.Lock()
	s.records = m
	s.mu.Unlock()
}

// SetDelay makes the server wait d before each answer, as a resolver does for a name it has to
// look up upstream.
func (s *DNSServer) SetDelay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// Queries counts the questions the server has answered.
func (s *DNSServer) Queries() int64 { return s.queries.Load() }

// ServeDNS answers one query.
func (s *DNSServer) ServeDNS(rw dns.ResponseWriter, q *dns.Msg) {
	s.queries.Add(1)
	s.mu.Lock()
	delay := s.delay
	s.mu.Unlock()
	time.Sleep(delay)
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		rw.WriteMsg(m)
		return
	}
	qn, qt := q.Question[0].Name, q.Question[0].Qtype
	s.mu.Lock()
	defer s.mu.Unlock()
	name := dns.Fqdn(strings.ToLower(qn))
	if _, ok := s.records[name]; !ok {
		m.Rcode = dns.RcodeRefused
		rw.WriteMsg(m)
		return
	}
	// DNS64 answers from the IPv6 side only, as an operator's resolver on an IPv6-only network.
	dns64 := s.dns64.IsValid() && qt == dns.TypeAAAA && rw.LocalAddr() != nil && isIPv6Addr(rw.LocalAddr())
	var synth []dns.RR
	// The first owner keeps the question's spelling, as real servers do (0x20 case checks).
	owner := qn
	for hops := 0; hops < 16; hops++ {
		next := ""
		for _, r := range s.records[name] {
			hdr := dns.RR_Header{Name: owner, Class: dns.ClassINET, Ttl: r.TTL}
			switch {
			case r.CNAME != "":
				hdr.Rrtype = dns.TypeCNAME
				next = dns.Fqdn(strings.ToLower(r.CNAME))
				m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr, Target: next})
			case r.Addr.Is4() && qt == dns.TypeA:
				hdr.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IP(r.Addr.AsSlice())})
			case r.Addr.Is6() && qt == dns.TypeAAAA:
				hdr.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(r.Addr.AsSlice())})
			case r.Addr.Is4() && dns64:
				hdr.Rrtype = dns.TypeAAAA
				synth = append(synth, &dns.AAAA{Hdr: hdr, AAAA: net.IP(synthesizeIn(s.dns64, r.Addr).AsSlice())})
			}
		}
		if next == "" {
			break
		}
		name, owner = next, next
	}
	if !hasType(m.Answer, dns.TypeAAAA) {
		m.Answer = append(m.Answer, synth...)
	}
	rw.WriteMsg(m)
}

func hasType(rrs []dns.RR, t uint16) bool {
	for _, rr := range rrs {
		if rr.Header().Rrtype == t {
			return true
		}
	}
	return false
}

func isIPv6Addr(a net.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	}
	return ip != nil && ip.To4() == nil
}

// synthesizeIn embeds an IPv4 address in the last 32 bits of a /96 (RFC 6052).
func synthesizeIn(p netip.Prefix, a netip.Addr) netip.Addr {
	b := p.Addr().As16()
	v4 := a.As4()
	copy(b[12:], v4[:])
	return netip.AddrFrom16(b)
}

// ResolveA asks the cloud's DNS server for name's A records from the device, as the hub's
// resolver would (through the device's routes and firewall), and returns the addresses.
func (w *World) ResolveA(name string) ([]string, error) {
	as, err := w.Resolve(DNSAddr, name, dns.TypeA)
	var addrs []string
	for _, a := range as {
		addrs = append(addrs, a.String())
	}
	return addrs, err
}

// Resolve asks server (port 53, UDP) for name's records of qtype (dns.TypeA, dns.TypeAAAA)
// from the device, through its routes and firewall, and returns the addresses answered.
func (w *World) Resolve(server netip.Addr, name string, qtype uint16) ([]netip.Addr, error) {
	return w.ResolveVia("", server, name, qtype)
}

// ResolveVia is Resolve with the query's socket bound to the device's interface dev (as a
// probe bound to an uplink asks), or unbound with dev "". A link-local server takes dev as
// its zone.
func (w *World) ResolveVia(dev string, server netip.Addr, name string, qtype uint16) ([]netip.Addr, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	if server.Is6() && server.IsLinkLocalUnicast() {
		server = server.WithZone(dev)
	}
	var m *dns.Msg
	err := w.Device.Do(func() (err error) {
		c := &dns.Client{Timeout: 10 * time.Second, Dialer: &net.Dialer{Control: bindControl(dev)}}
		m, _, err = c.Exchange(q, netip.AddrPortFrom(server, 53).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("testbed: resolve %s %s at %s: %w", dns.TypeToString[qtype], name, server, err)
	}
	var addrs []netip.Addr
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			a, _ := netip.AddrFromSlice(r.A.To4())
			addrs = append(addrs, a)
		case *dns.AAAA:
			a, _ := netip.AddrFromSlice(r.AAAA)
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}
