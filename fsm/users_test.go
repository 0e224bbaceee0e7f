package fsm

import "testing"

// TestClearPermissions: cleared permissions are gone from every listing; clearing what is not
// there is NotFound, not an error; the command survives Encode/Decode.
func TestClearPermissions(t *testing.T) {
	f := New(Options{})
	mustApply := func(c Command) Result {
		t.Helper()
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		r := f.ApplyCommand(f.AppliedIndex()+1, d)
		if r.Err != nil {
			t.Fatalf("%T: %v", c, r.Err)
		}
		return r
	}
	mustApply(PutUser{Name: "bob", PasswordHash: "h"})
	mustApply(AddVhost{Name: "v"})
	mustApply(SetPermissions{User: "bob", Vhost: "/", Configure: ".*", Write: ".*", Read: ".*"})
	mustApply(SetPermissions{User: "bob", Vhost: "v", Configure: "", Write: "^q$", Read: ".*"})
	if got := f.AllPermissions(); len(got) != 2 || got[1].Vhost != "v" || got[1].Write != "^q$" {
		t.Fatalf("permissions: %+v", got)
	}
	if r := mustApply(ClearPermissions{User: "bob", Vhost: "/"}); r.NotFound {
		t.Fatal("clearing existing permissions reported NotFound")
	}
	if _, ok := f.Permissions("bob", "/"); ok {
		t.Fatal("permissions still there after ClearPermissions")
	}
	if r := mustApply(ClearPermissions{User: "bob", Vhost: "/"}); !r.NotFound {
		t.Fatal("clearing absent permissions did not report NotFound")
	}
	if got := f.AllPermissions(); len(got) != 1 || got[0].Vhost != "v" {
		t.Fatalf("permissions after clear: %+v", got)
	}
}
