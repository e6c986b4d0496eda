package fanout

// Classifier chooses the route that owns an item.
//
// Classify must be deterministic for the duration of a call, fast (it runs
// once per item on the caller's goroutine) and safe for concurrent use. An
// error fails the whole call; the [Router] reports it with the item's index
// as an [*ItemError].
type Classifier[T any] interface {
	Classify(item T) (route string, err error)
}

// ClassifierFunc adapts an ordinary function to the [Classifier] interface.
type ClassifierFunc[T any] func(item T) (route string, err error)

// Classify calls f(item).
func (f ClassifierFunc[T]) Classify(item T) (string, error) {
	return f(item)
}
