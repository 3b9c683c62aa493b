package dnsgate

import (
	"testing"
	"time"
)

func TestLatencies(t *testing.T) {
	var l latencies
	if l.percentile(99) != 0 {
		t.Fatal("empty")
	}
	for i := 1; i <= 100; i++ {
		l.add(time.Duration(i) * time.Microsecond)
	}
	if p := l.percentile(50); p != 51*time.Microsecond {
		t.Errorf("p50 %v", p)
	}
	if p := l.percentile(99); p != 100*time.Microsecond {
		t.Errorf("p99 %v", p)
	}
	// Only the last 1024 samples count.
	for i := 0; i < 1024; i++ {
		l.add(time.Millisecond)
	}
	if p := l.percentile(0); p != time.Millisecond {
		t.Errorf("old samples kept: p0 %v", p)
	}
}
