package ipset

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
)

// listMessage builds a list-dump message as the kernel sends it.
func listMessage(t testing.TB) []byte {
	enc := netlink.NewAttributeEncoder()
	enc.ByteOrder = binary.BigEndian
	enc.String(attrSetName, "afconn_allow4")
	enc.String(attrTypeName, "hash:ip")
	enc.Uint8(attrRevision, 2)
	enc.Uint8(attrFamily, uint8(INet))
	enc.Nested(attrData, func(d *netlink.AttributeEncoder) error {
		d.Uint32(attrMaxElem|nlaNetByteOrder, 65536)
		d.Uint32(attrElements|nlaNetByteOrder, 1)
		d.Uint32(attrTimeout|nlaNetByteOrder, 0)
		return nil
	})
	enc.Nested(attrADT, func(adt *netlink.AttributeEncoder) error {
		adt.Nested(attrData, func(d *netlink.AttributeEncoder) error {
			d.Nested(attrIP, func(ip *netlink.AttributeEncoder) error {
				ip.Bytes(attrIPv4|nlaNetByteOrder, []byte{198, 18, 0, 1})
				return nil
			})
			d.Uint32(attrTimeout|nlaNetByteOrder, 30)
			d.String(attrComment, "cloud.afero.io")
			return nil
		})
		return nil
	})
	b, err := enc.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{2, 0, 0, 0}, b...)
}

func TestParseList(t *testing.T) {
	var s Set
	if err := parseList(listMessage(t), &s); err != nil {
		t.Fatal(err)
	}
	if s.Name != "afconn_allow4" || s.Type != "hash:ip" || s.Elements != 1 || !s.Timeout || len(s.Entries) != 1 ||
		s.Entries[0].Addr.String() != "198.18.0.1" || s.Entries[0].Comment != "cloud.afero.io" || s.Entries[0].Timeout.Seconds() != 30 {
		t.Fatalf("parsed %+v", s)
	}
	for _, bad := range [][]byte{nil, {2, 0}, append(listMessage(t)[:20:20], 0xff)} {
		var s Set
		if err := parseList(bad, &s); err == nil && s.Name != "" && len(s.Entries) > 0 {
			t.Errorf("garbage %x parsed to %+v", bad, s)
		}
	}
}

// FuzzParseList: kernel answers are parsed without panics, whatever their bytes.
func FuzzParseList(f *testing.F) {
	f.Add(listMessage(f))
	f.Add([]byte{2, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 8, 0, 8, 128, 4, 0, 7, 128})
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Set
		if err := parseList(b, &s); err == nil {
			for _, e := range s.Entries {
				if !e.Addr.IsValid() {
					t.Fatalf("entry without a valid address accepted: %+v", e)
				}
			}
		}
	})
}
