package scaler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sss-go/sss/scaler"
)

// Two instances on one in-memory backend, as two servers would share a
// deployment: B receives A's publication through its ordered stream.
func ExampleNewMemoryBackend() {
	ctx := context.Background()
	backend := scaler.NewMemoryBackend(scaler.MemoryOptions{})
	a, b := backend.Instance(), backend.Instance()
	defer a.Close(ctx)
	defer b.Close(ctx)

	got := make(chan scaler.Publication, 1)
	b.Start(ctx, scaler.Handler{Publication: func(p scaler.Publication) { got <- p }})
	a.Start(ctx, scaler.Handler{})

	pos, _ := b.Subscribe(ctx, "room")
	uid, _ := a.Publish(ctx, "room", "say", json.RawMessage(`{"text":"hi"}`), scaler.PublishOptions{})
	select {
	case p := <-got:
		fmt.Println(pos.Seq, uid.Seq, p.UID == uid, p.Topic, string(p.Msg))
	case <-time.After(10 * time.Second):
		fmt.Println("nothing delivered")
	}
	// Output: 0 1 true say {"text":"hi"}
}

// A single instance: the embedded default of a server running alone.
func ExampleNewMemory() {
	ctx := context.Background()
	sc := scaler.NewMemory(scaler.MemoryOptions{DefaultRetention: scaler.Retention{MaxCount: 100}})
	defer sc.Close(ctx)
	for i := range 3 {
		sc.Publish(ctx, "news", "n", json.RawMessage(fmt.Sprint(i)), scaler.PublishOptions{})
	}
	pubs, _ := sc.History(ctx, "news", 2)
	for _, p := range pubs {
		fmt.Println(p.UID.Seq, string(p.Msg))
	}
	// Output:
	// 2 1
	// 3 2
}
