package protocol_test

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sss-go/sss/protocol"
)

func ExampleParseUID() {
	u, err := protocol.ParseUID("Xy12.41")
	if err != nil {
		panic(err)
	}
	next := u.Next()
	cmp, sameEpoch := u.Compare(next)
	fmt.Println(u.Epoch, u.Seq, next, cmp, sameEpoch)

	_, err = protocol.ParseUID("Xy12.041")
	fmt.Println(errors.Is(err, protocol.ErrBadUID))
	// Output:
	// Xy12 41 Xy12.42 -1 true
	// true
}

func ExampleAppendFeed() {
	buf := make([]byte, 0, 128)
	buf = protocol.AppendFeed(buf, "sport", "article", json.RawMessage(`{"title":"<Goal & more>"}`),
		protocol.UID{Epoch: "Xy12", Seq: 42})
	fmt.Println(string(buf))
	// Output:
	// {"sys":8,"topic":"article","msg":{"title":"<Goal & more>"},"channel":"sport","uid":"Xy12.42"}
}

func ExampleDecodeClient() {
	m, err := protocol.DecodeClient([]byte(`{"sys":5,"topic":"serverTime","id":3}`), protocol.DefaultLimits())
	if err != nil {
		panic(err)
	}
	fmt.Println(string(protocol.AppendResponse(nil, m.ID, json.RawMessage(`1700000000`))))

	_, err = protocol.DecodeClient([]byte(`{"sys":5,"topic":7,"id":"q"}`), protocol.DefaultLimits())
	var de *protocol.DecodeError
	if errors.As(err, &de) {
		fmt.Println(string(protocol.AppendResponseError(nil, de.ID, de.Object())))
	}
	// Output:
	// {"sys":7,"msg":1700000000,"id":3}
	// {"sys":7,"err":{"name":"BadRequest","message":"topic must be a string","code":"bad_request"},"id":"q"}
}
