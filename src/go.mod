module github.com/afero/af-conn

go 1.26.0

require (
	github.com/miekg/dns v1.1.73
	github.com/vishvananda/netns v0.0.5
	golang.org/x/net v0.58.0
	golang.org/x/sys v0.49.0
)
