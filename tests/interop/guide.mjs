// The seed guide's publishing flow for one answer, shared by publisher.mjs and the
// benchmark: stream a Responses answer with openai-node; on `response.created`, publish an
// empty `response` message and keep its serial; append every text delta of the message item
// with `appendMessage`, without awaiting each one. It returns the appends in flight so the
// caller can wait for their acknowledgements.

/**
 * Streams one answer to `channel`. `onCreated({ serial, responseId })` is called once the
 * create is published. Resolves to { serial, responseId, text, appends, terminal }, where
 * `appends` are the unawaited appendMessage promises.
 */
export async function streamGuideAnswer({ openai, channel, model, prompt, onCreated = () => {} }) {
  let serial = null;
  let textItem = null;
  let responseId = null;
  let terminal = null;
  let text = '';
  const appends = [];
  const stream = await openai.responses.create({ model, input: prompt, stream: true });
  for await (const event of stream) {
    switch (event.type) {
      case 'response.created': {
        responseId = event.response?.id ?? null;
        const published = await channel.publish({ name: 'response', data: '' });
        serial = published.serials[0];
        onCreated({ serial, responseId });
        break;
      }
      case 'response.output_item.added':
        if (event.item.type === 'message') textItem = event.item.id;
        break;
      case 'response.output_text.delta':
        if (event.item_id === textItem && serial) {
          // Not awaited, as in the guide: appends pipeline on the connection. A handler is
          // attached at once so that a refusal before the caller looks at the appends is
          // counted rather than crashing the process as an unhandled rejection.
          const append = channel.appendMessage({ serial, data: event.delta });
          append.catch(() => {});
          appends.push(append);
          text += event.delta;
        }
        break;
      case 'response.completed':
      case 'response.incomplete':
      case 'response.failed':
      case 'error':
        terminal = event.type;
        break;
      default:
        break;
    }
  }
  return { serial, responseId, text, appends, terminal };
}
