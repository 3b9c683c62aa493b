package ubus

// Exported for the external tests that drive ubustest with the transcript.
var LoadTranscript = loadTranscript

type TranscriptLine = transcriptLine
