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

// StartDNS starts the cloud's DNS server with the given records.
func (w *World) StartDNS(records []Record) (*DNSServer, error) {
	return w.StartDNSAt(DNSAddr, records)
}

// StartDNSAt starts a DNS server like the cloud's on another address of the cloud (which the
// caller has added), e.g. a rogue resolver.
func (w *World) StartDNSAt(addr netip.Addr, records []Record) (*DNSServer, error) {
	s := &DNSServer{}
	s.SetRecords(records)
	udp, err := w.Cloud.ListenPacket("udp4", netip.AddrPortFrom(addr, 53).String())
	if err != nil {
		return nil, fmt.Errorf("testbed: dns udp: %w", err)
	}
	tcp, err := w.Cloud.Listen("tcp4", netip.AddrPortFrom(addr, 53).String())
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("testbed: dns tcp: %w", err)
	}
	s.servers = []*dns.Server{
		{PacketConn: udp, Handler: s},
		{Listener: tcp, Handler: s},
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
	return s, nil
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
			}
		}
		if next == "" {
			break
		}
		name, owner = next, next
	}
	rw.WriteMsg(m)
}

// ResolveA asks the cloud's DNS server for name's A records from the device, as the hub's
// resolver would (through the device's routes and firewall), and returns the addresses.
func (w *World) ResolveA(name string) ([]string, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	var m *dns.Msg
	err := w.Device.Do(func() (err error) {
		c := &dns.Client{Timeout: 10 * time.Second}
		m, _, err = c.Exchange(q, net.JoinHostPort(DNSAddr.String(), "53"))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("testbed: resolve %s: %w", name, err)
	}
	var addrs []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	return addrs, nil
}
