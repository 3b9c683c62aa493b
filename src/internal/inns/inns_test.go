package inns

import (
	"errors"
	"testing"

	"github.com/vishvananda/netns"
)

// The zero handle (a Target or Config left without a namespace) and
// netns.None() both mean "here": fn runs, no setns is tried.
func TestUnsetMeansHere(t *testing.T) {
	for _, ns := range []netns.NsHandle{0, netns.None()} {
		ran := false
		if err := Do(ns, func() error { ran = true; return nil }); err != nil || !ran {
			t.Fatalf("handle %d: ran=%v err=%v", ns, ran, err)
		}
	}
	want := errors.New("x")
	if err := Do(0, func() error { return want }); err != want {
		t.Fatalf("error not passed through: %v", err)
	}
}
