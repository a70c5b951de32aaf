package scaler

// ChannelStates returns how many channels b holds state for.
func ChannelStates(b *MemoryBackend) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.channels)
}
