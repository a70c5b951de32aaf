package mongoredis

import "testing"

// TestHeldSettle: an entry is clean only once a write of its latest change
// landed; a failed write, or one overtaken by a later change, leaves it
// dirty for the renewal, and a tombstone goes once its removal landed.
func TestHeldSettle(t *testing.T) {
	h := newHeld()
	dirty := func(ch, id string) bool {
		t.Helper()
		e := h.pr[ch][id]
		if e == nil {
			t.Fatalf("%s/%s not held", ch, id)
		}
		return e.dirty
	}
	v1 := h.join("c", "m", `{"id":"m","info":1}`)
	v2 := h.join("c", "m", `{"id":"m","info":2}`)
	// The newer write lands first, then the older one overtakes it in
	// Redis: the entry must end up dirty, so the renewal rewrites v2.
	h.settlePresence("c", "m", v2, true)
	if dirty("c", "m") {
		t.Fatal("clean write of the latest change left the entry dirty")
	}
	h.settlePresence("c", "m", v1, true)
	if !dirty("c", "m") {
		t.Fatal("a stale write that landed after the latest one left the entry clean")
	}
	if ps := h.plan(); len(ps) != 1 || len(ps[0].writes) != 1 || ps[0].writes[0].ver != v2 || !ps[0].writes[0].live {
		t.Fatalf("plan = %+v, want one write of change %d", ps, v2)
	}
	h.settlePresence("c", "m", v2, true)

	// A failed Leave keeps a dirty tombstone; it goes once the removal
	// lands, and so does the channel.
	v3, ok := h.leave("c", "m")
	if !ok {
		t.Fatal("leave of a held member reported not held")
	}
	h.settlePresence("c", "m", v3, false)
	if !dirty("c", "m") || h.pr["c"]["m"].live {
		t.Fatal("failed leave: want a dirty tombstone")
	}
	if ps := h.plan(); len(ps) != 1 || len(ps[0].writes) != 1 || ps[0].writes[0].live {
		t.Fatalf("plan = %+v, want one removal", ps)
	}
	h.settlePresence("c", "m", v3, true)
	if _, ok := h.pr["c"]; ok {
		t.Fatal("a confirmed removal of the last member left the channel held")
	}
	if _, ok := h.leave("c", "nobody"); ok {
		t.Fatal("leave of an unknown member reported held")
	}

	// Users are counted; only the first add and the last remove write.
	if _, w := h.addUser("u"); !w {
		t.Fatal("first AddUser did not write")
	}
	if _, w := h.addUser("u"); w {
		t.Fatal("second AddUser wrote")
	}
	if _, w := h.removeUser("u"); w {
		t.Fatal("RemoveUser of one of two sockets wrote")
	}
	v, w := h.removeUser("u")
	if !w {
		t.Fatal("RemoveUser of the last socket did not write")
	}
	h.users.settle("u", v, true)
	if _, ok := h.users["u"]; ok {
		t.Fatal("a confirmed user removal left the user held")
	}
	if _, w := h.removeUser("u"); w {
		t.Fatal("RemoveUser without AddUser wrote")
	}

	// A new lease: everything is dirty again.
	h.join("c", "a", `{"id":"a"}`)
	h.settlePresence("c", "a", h.ver, true)
	h.markAll()
	if !dirty("c", "a") {
		t.Fatal("markAll left an entry clean")
	}
}
