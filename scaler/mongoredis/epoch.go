package mongoredis

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sss-go/sss/protocol"
)

// Epochs without a document per channel.
//
// A channel gets a document in <prefix>_channels only with its first
// publication (or a history reset), so subscribing to fresh names leaves
// nothing behind. Yet every instance must agree on the epoch of a channel
// that was never published, at any time, without a document for it:
// that epoch is a keyed hash of the channel name under a random secret
// kept in one meta document per namespace ({_id: "", secret}; no channel
// is named ""). The first publish creates the channel document with that
// same epoch, so "<epoch>.0" handed out before stays recoverable. A
// database that lost its data loses the meta document too; the next
// instance that needs it creates a new secret, so every epoch changes and
// old uids are reported as not recoverable.

// metaID is the _id of the meta document.
const metaID = ""

// metaDoc is the namespace's meta document.
type metaDoc struct {
	ID     string `bson:"_id"`
	V      int32  `bson:"v,omitempty"`
	Secret string `bson:"secret"`
}

// chanInfo is what a lookup tells about one channel.
type chanInfo struct {
	doc    chanDoc // the channel document, or the default one when !found
	found  bool    // the channel has a document
	secret string  // the namespace secret the default epoch comes from
}

// keyedEpoch derives an epoch (16 characters of [A-Za-z0-9]) from the
// secret and the parts.
func keyedEpoch(secret string, parts ...string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	for _, p := range parts {
		mac.Write([]byte(p))
		mac.Write([]byte{0})
	}
	sum := mac.Sum(nil)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 16)
	for i := range out {
		out[i] = alphabet[int(sum[i])%len(alphabet)]
	}
	return string(out)
}

// defaultEpoch is the epoch of a channel that has no document.
func defaultEpoch(secret, ch string) string { return keyedEpoch(secret, "channel", ch) }

// rollbackEpoch is the epoch a channel moves to when its log is found
// behind what was delivered from epoch old. It is the same on every
// instance, so instances that notice at once agree even where updates are
// not atomic (FerretDB).
func rollbackEpoch(secret, ch, old string) string { return keyedEpoch(secret, "rollback", ch, old) }

// lookupMany reads the documents of names and the namespace secret in one
// query, creating the meta document when it is missing. Channels without
// a document are absent from the map.
func (l *mlog) lookupMany(ctx context.Context, names []string) (map[string]chanDoc, string, error) {
	ids := append(make([]string, 0, len(names)+1), metaID)
	for _, n := range names {
		if n != metaID {
			ids = append(ids, n)
		}
	}
	raw, err := findAll[bson.Raw](ctx, l.chans, "read channels", bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}}, options.Find())
	if err != nil {
		return nil, "", err
	}
	out := make(map[string]chanDoc, len(raw))
	secret := ""
	for _, r := range raw {
		id, _ := r.Lookup("_id").StringValueOK()
		if id == metaID {
			s, _ := r.Lookup("secret").StringValueOK()
			secret = s
			continue
		}
		var d chanDoc
		if err := bson.Unmarshal(r, &d); err != nil || !protocol.ValidEpoch(d.Epoch) || d.Floor < 0 {
			return nil, "", malformed(fmt.Sprintf("channel %q", id), "bad channel document")
		}
		out[d.Ch] = d
	}
	if secret == "" {
		if secret, err = l.createSecret(ctx); err != nil {
			return nil, "", err
		}
	}
	return out, secret, nil
}

// createSecret makes the meta document; when another instance made it
// first, it reads theirs.
func (l *mlog) createSecret(ctx context.Context) (string, error) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	m := metaDoc{ID: metaID, V: formatVersion, Secret: hex.EncodeToString(b[:])}
	_, err := l.chans.InsertOne(ctx, m)
	if err == nil {
		return m.Secret, nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return "", unavailable("create namespace secret", err)
	}
	var theirs metaDoc
	if err := l.chans.FindOne(ctx, bson.D{{Key: "_id", Value: metaID}}).Decode(&theirs); err != nil {
		return "", unavailable("read namespace secret", err)
	}
	if theirs.Secret == "" {
		return "", malformed("namespace meta document", "empty secret")
	}
	return theirs.Secret, nil
}

// lookup reads one channel's document, or makes up the default one of a
// channel that has none (without storing anything but, once per
// namespace, the meta document).
func (l *mlog) lookup(ctx context.Context, ch string) (chanInfo, error) {
	docs, secret, err := l.lookupMany(ctx, []string{ch})
	if err != nil {
		return chanInfo{}, err
	}
	if d, ok := docs[ch]; ok {
		return chanInfo{doc: d, found: true, secret: secret}, nil
	}
	return chanInfo{doc: chanDoc{Ch: ch, Epoch: defaultEpoch(secret, ch)}, secret: secret}, nil
}

// ensureChannel returns the channel's document, creating it in the
// default epoch when there is none (the first publish does this before
// inserting anything; two instances racing both end up with the one that
// was inserted first).
func (l *mlog) ensureChannel(ctx context.Context, ch string) (chanDoc, error) {
	for attempt := 0; attempt < 4; attempt++ {
		info, err := l.lookup(ctx, ch)
		if err != nil || info.found {
			return info.doc, err
		}
		// A new channel (or a database that lost its data): make sure the
		// unique indexes exist before anything is written under its epoch.
		if err := l.ensureIndexes(ctx); err != nil {
			return chanDoc{}, err
		}
		info.doc.V = formatVersion
		_, err = l.chans.InsertOne(ctx, info.doc)
		if err == nil {
			return info.doc, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return chanDoc{}, unavailable("create channel", err)
		}
		// Someone else created it: read theirs.
	}
	return chanDoc{}, unavailable("create channel", errors.New("channel document keeps vanishing"))
}

// moveEpoch moves ch from epoch old to epoch next, only if old is still
// its epoch, and returns the channel's document afterwards (whoever moved
// it).
func (l *mlog) moveEpoch(ctx context.Context, ch, old, next string) (chanDoc, error) {
	info, err := l.lookup(ctx, ch)
	if err != nil || info.doc.Epoch != old {
		return info.doc, err
	}
	d := chanDoc{Ch: ch, V: formatVersion, Epoch: next}
	if info.found {
		_, err = l.chans.UpdateOne(ctx, bson.D{{Key: "_id", Value: ch}, {Key: "ep", Value: old}}, newEpochUpdate(next))
	} else {
		_, err = l.chans.InsertOne(ctx, d)
		if mongo.IsDuplicateKeyError(err) {
			err = nil
		}
	}
	if err != nil {
		return chanDoc{}, unavailable("new epoch", err)
	}
	info, err = l.lookup(ctx, ch)
	return info.doc, err
}

// newEpochUpdate moves a channel document to epoch ep with an empty log
// (in this version's format).
func newEpochUpdate(ep string) bson.D {
	return bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: formatVersion}, {Key: "ep", Value: ep}, {Key: "floor", Value: int64(0)}}}}
}

// reset starts a new random epoch for ch and removes its history.
func (l *mlog) reset(ctx context.Context, ch string) (string, error) {
	ep := protocol.NewEpoch()
	_, err := l.chans.UpdateOne(ctx, bson.D{{Key: "_id", Value: ch}}, newEpochUpdate(ep), options.UpdateOne().SetUpsert(true))
	if err != nil {
		return "", unavailable("reset history", err)
	}
	if _, err := l.deleteOtherEpochs(ctx, ch, ep); err != nil {
		return "", err
	}
	return ep, nil
}

// channelPage lists up to n channel documents whose name sorts after
// `after`, in name order (the meta document, named "", never does).
func (l *mlog) channelPage(ctx context.Context, after string, n int) ([]chanDoc, error) {
	return findAll[chanDoc](ctx, l.chans, "list channels", bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: after}}}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(int64(n)))
}
