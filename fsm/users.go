package fsm

import (
	"cmp"
	"slices"
)

// PermissionEntry is one user's permissions in one vhost.
type PermissionEntry struct {
	User, Vhost string
	Permissions
}

// AllPermissions lists every user's permissions, sorted by user then vhost.
func (f *FSM) AllPermissions() []PermissionEntry {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []PermissionEntry
	for u, byVhost := range f.perms {
		for v, p := range byVhost {
			out = append(out, PermissionEntry{User: u, Vhost: v, Permissions: p})
		}
	}
	slices.SortFunc(out, func(a, b PermissionEntry) int {
		if c := cmp.Compare(a.User, b.User); c != 0 {
			return c
		}
		return cmp.Compare(a.Vhost, b.Vhost)
	})
	return out
}
