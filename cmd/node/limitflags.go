package main

import (
	"errors"
	"flag"
	"strconv"
)

// limitFlags are a node's protections of `node run`.
type limitFlags struct {
	maxConns   *int
	channelMax *int
	diskFree   *uint64
	memHigh    *uint64
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(envDefault(name, "")); err == nil {
		return v
	}
	return def
}

func addLimitFlags(fs *flag.FlagSet) *limitFlags {
	disk, _ := strconv.ParseUint(envDefault("disk-free-limit", "50000000"), 10, 64)
	mem, _ := strconv.ParseUint(envDefault("memory-high-watermark", "0"), 10, 64)
	return &limitFlags{
		maxConns:   fs.Int("max-connections", envInt("max-connections", 0), "client connections this node accepts at most; more are refused with 530 (0: no cap; env WARREN_MAX_CONNECTIONS)"),
		channelMax: fs.Int("channel-max", envInt("channel-max", 2047), "channels per connection (RabbitMQ's channel_max; env WARREN_CHANNEL_MAX)"),
		diskFree:   fs.Uint64("disk-free-limit", disk, "bytes of free disk under --data-dir below which publishers are blocked (RabbitMQ's disk_free_limit; env WARREN_DISK_FREE_LIMIT)"),
		memHigh:    fs.Uint64("memory-high-watermark", mem, "heap bytes above which publishers are blocked (0: 40% of physical memory, RabbitMQ's default; env WARREN_MEMORY_HIGH_WATERMARK)"),
	}
}

func (l *limitFlags) check() error {
	if *l.maxConns < 0 {
		return errors.New("--max-connections must not be negative")
	}
	if *l.channelMax < 1 || *l.channelMax > 65535 {
		return errors.New("--channel-max must be between 1 and 65535")
	}
	return nil
}
