// Editing a recording's words (/v1/audio/edit): the recording, what it says (or what the server hears) and what
// it should say; the answer's spectrogram beside the recording's, on one loudness scale.
"use strict";

async function runEdit(event) {
  event.preventDefault();
  clearErrors("edit");
  if (!state.edit) return fieldError($("edit-file"), "Choose a recording or record one first.");
  const body = new FormData();
  body.append("file", state.edit.blob, state.edit.name);
  body.append("text", $("edit-text").value);
  const transcript = $("edit-transcript").value.trim();
  if (transcript) body.append("transcript", transcript);
  const input = state.edit;
  await busy("edit", async () => {
    await input.ready;
    const response = await api(EDIT_ENDPOINT, { method: "POST", body });
    const blob = await response.blob();
    release("edit");
    const heard = decodeURIComponent(response.headers.get("X-Transcript") || "");
    const figures = await taskFigures("edit", input, blob, "edit", "Edited (after)");
    const box = showResult("edit", { blob, response, figures });
    if (response.headers.get("X-Transcribed") === "true") {  // say what the edit was made against
      const note = document.createElement("p");
      note.id = "edit-heard";
      note.className = "note";
      note.textContent = `The server heard: “${heard}”`;
      box.prepend(note);
      if (!$("edit-transcript").value.trim()) $("edit-transcript").value = heard;
    }
  });
}

// What it should say starts as what it says: the words are changed in place. The copy follows the transcript
// until the new text is edited by hand.
let mirrored = "";
$("edit-transcript").addEventListener("input", () => {
  const text = $("edit-text");
  if (text.value === mirrored) text.value = $("edit-transcript").value;
  mirrored = $("edit-transcript").value;
});
