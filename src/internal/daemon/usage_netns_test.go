package daemon

import (
	"testing"

	"github.com/afero/af-conn/internal/testbed"
)

// The ledger's namespace cookie tells namespaces apart where an inode may not (a new
// namespace can get a gone one's inode): two namespaces, two cookies, each stable.
func TestNetnsCookie(t *testing.T) {
	here := netnsCookie()
	if here == "" {
		t.Skip("this kernel has no SO_NETNS_COOKIE (Linux < 5.14)")
	}
	ns := testbed.NewNS(t, "cookie")
	var there, again string
	if err := ns.Do(func() error { there, again = netnsCookie(), netnsCookie(); return nil }); err != nil {
		t.Fatal(err)
	}
	if there == "" || there == here || there != again || netnsCookie() != here {
		t.Fatalf("cookies: here %q (now %q), in a new namespace %q then %q", here, netnsCookie(), there, again)
	}
}
