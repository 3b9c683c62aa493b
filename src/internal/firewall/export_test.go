package firewall

// SetNFTTimeoutUpdate overrides the probed kernel capability, so tests run
// the add-delete-add path of kernels older than 6.10 here too.
func SetNFTTimeoutUpdate(b Backend, v bool) {
	n := b.(*NFT)
	n.probe()
	n.probed.updateTTL = v
}
