module github.com/afero/af-conn

go 1.26.0

require (
	github.com/miekg/dns v1.1.73
	github.com/vishvananda/netns v0.0.5
)

require (
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
