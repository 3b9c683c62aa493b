package firewall

// KernelRoom is how many addresses a learned set of the backend kind takes in the kernel with
// set_maxelem maxElem: nftables' sets are made larger by room for the expired awaiting collection.
func KernelRoom(kind string, maxElem int) int {
	if kind == BackendNFT {
		return maxElem + expiredRoom(maxElem)
	}
	return maxElem
}
