// Package kubernetes has no code of its own: it is the test of the
// Kubernetes manifests beside it (see README.md) and of the repository's
// Dockerfile, which cannot be built where the tests run.
//
// The tests decode every manifest strictly into the Kubernetes API types, as
// the API server's strict field validation would, and check what keeps the
// system working once applied: selectors that find their pods, Services
// that reach ports the containers have, probes on the admin endpoint, a
// grace period longer than the programs' own, disruption budgets, a
// restricted security context, and the middle finding its backends by the
// names of their headless Services. They build the example programs from
// the workspace and check that every flag the manifests pass is one the
// program accepts, with a value it accepts. They read the Dockerfile and
// .dockerignore to check that every program is built, statically, from a
// context that holds its sources, into an image that runs as a user that is
// not root.
//
// It is a module of its own, in the repository's go.work workspace, so that
// the Kubernetes API types never enter the library's or the examples'
// dependencies.
package kubernetes
