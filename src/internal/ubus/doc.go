// Package ubus speaks the OpenWrt ubus wire protocol natively, without cgo.
//
// It owns the blob and blobmsg encodings of libubox (blob.c, blobmsg.c), the
// ubus message framing of openwrt/ubus (ubusmsg.h), a client connection that
// looks up, calls and publishes objects, listens to and sends events, and
// notifies subscribers (Conn), and a supervisor that reconnects to a restarted
// ubusd and registers everything again (Client). The byte layouts follow the
// C sources exactly; tests compare them with a capture of the stock tools.
//
// Wire facts worth knowing when reading this code:
//   - every blob attribute starts with a big-endian 32-bit word: bit 31 the
//     "extended" flag (a blobmsg name header follows), bits 24-30 the id or
//     type, bits 0-23 the raw length including the 4-byte header; the next
//     attribute starts at the raw length rounded up to 4;
//   - a container's length counts the padding of its last member;
//   - a ubus message is an 8-byte header (version 0, type, seq, peer) and one
//     blob attribute whose payload is the list of message attributes.
package ubus
