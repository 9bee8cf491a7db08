package main

import (
	"encoding/json"
	"testing"
)

func TestAnswer(t *testing.T) {
	var init struct {
		ID     int `json:"id"`
		Result struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"result"`
	}
	if err := json.Unmarshal(answer([]byte(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`)), &init); err != nil {
		t.Fatal(err)
	}
	if init.ID != 0 || init.Result.ProtocolVersion != "2025-06-18" {
		t.Fatalf("initialize answer %+v", init)
	}
	got := string(answer([]byte(`{"jsonrpc":"2.0","id":"a-7","method":"tools/call","params":{"name":"echo","arguments":{"message":"hi \"x\""}}}`)))
	want := `{"jsonrpc":"2.0","id":"a-7","result":{"content":[{"type":"text","text":"Echo: hi \"x\""}]}}`
	if got != want {
		t.Fatalf("echo answer\n got %s\nwant %s", got, want)
	}
	if a := answer([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)); a != nil {
		t.Fatalf("a notification got an answer: %s", a)
	}
	if a := answer([]byte(`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`)); string(a) != `{"jsonrpc":"2.0","id":3,"result":{}}` {
		t.Fatalf("other request: %s", a)
	}
}
