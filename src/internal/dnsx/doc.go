// Package dnsx owns the pure part of DNS extraction: decoding the IP/UDP/TCP
// packets that carry DNS, parsing DNS messages (header, question, A, AAAA and
// CNAME answers, with validated compression pointers and checked lengths),
// walking a reply's CNAME chain to the addresses it answers, deciding whether
// the chain is whitelisted and for how long its addresses may be opened, the
// anti-forgery check that only trusts replies of the uplinks' resolvers to
// queries this host actually sent (Tracker: the hub's own queries and LAN
// clients' in separate bounded tables), and the bounds on what answers open
// (Ledger: per reply, per name, in all, and who gives way). Nothing here
// touches the OS; time comes from an injected clock.
package dnsx
