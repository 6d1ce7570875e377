// Package preflight answers a runner admin's questions before the first job
// runs: is the settings file valid (Check), is the policy what its author
// meant (lint findings located on the file's lines), which rule would a
// given job get and why (Explain, RunPolicyTests), and does everything the
// executor talks to answer the way the settings assume (Doctor). Nothing
// here changes the executor's behaviour: it calls the same settings loader,
// policy evaluation and clients the stages use.
package preflight
